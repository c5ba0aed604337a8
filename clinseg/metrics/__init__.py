"""Evaluation metrics: voxel overlap and the ATM'22 airway tree metrics."""

from .airway import AirwayReference, aggregate, airway_metrics
from .overlap import confusion, overlap_metrics

__all__ = ["AirwayReference", "aggregate", "airway_metrics", "confusion", "overlap_metrics"]
