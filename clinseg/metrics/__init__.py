"""Evaluation metrics: voxel overlap, surface distances, lesion-wise scores, per-organ QA, ATM'22 airway metrics and
nodule detection (FROC / CPM)."""

from .airway import AirwayReference, aggregate, airway_metrics
from .detection import Detection, Froc, ReferenceNodule, froc, match_detections, nodule_overlaps, nodule_summary
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
    "Detection",
    "Froc",
    "ReferenceNodule",
    "SurfaceDistances",
    "aggregate",
    "aggregate_cases",
    "airway_metrics",
    "average_surface_distance",
    "case_metrics",
    "confusion",
    "froc",
    "hausdorff",
    "hd95",
    "lesion_counts",
    "lesion_f1",
    "match_detections",
    "nodule_overlaps",
    "nodule_summary",
    "organ_table",
    "overlap_metrics",
    "surface_dice",
    "surface_distances",
    "surface_metrics",
]
