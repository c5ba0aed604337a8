"""RTSTRUCT reading and writing live in ``clinseg.io.rtstruct``; this name is kept for the dataset adapters."""

from ..io.rtstruct import ReferenceSeries, Structure, read_rtstruct, write_rtstruct

__all__ = ["ReferenceSeries", "Structure", "read_rtstruct", "write_rtstruct"]
