"""Evaluation metrics: voxel overlap, surface distances, lesion-wise scores, per-organ QA and ATM'22 airway metrics."""

from .airway import AirwayReference, aggregate, airway_metrics
from .lesion import aggregate_cases, case_metrics, lesion_counts, lesion_f1
from .organs import organ_table
from .overlap import confusion, overlap_metrics
from .surface import (
    SurfaceDistances,
    average_surface_distance,
    hausdorff,
    hd95,
    surface_dice,
    surface_distances,
    surface_metrics,
)

__all__ = [
    "AirwayReference",
    "SurfaceDistances",
    "aggregate",
    "aggregate_cases",
    "airway_metrics",
    "average_surface_distance",
    "case_metrics",
    "confusion",
    "hausdorff",
    "hd95",
    "lesion_counts",
    "lesion_f1",
    "organ_table",
    "overlap_metrics",
    "surface_dice",
    "surface_distances",
    "surface_metrics",
]
