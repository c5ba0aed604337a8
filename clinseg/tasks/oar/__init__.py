"""OARSeg: head & neck organs at risk (two-stage U-Net, document 001) and a CTV from a drawn GTV."""

from .pipeline import DEFAULT_MODEL, OarOptions, run_oar

__all__ = ["DEFAULT_MODEL", "OarOptions", "run_oar"]
