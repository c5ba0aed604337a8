"""Post-processing of segmentations: components, skeletons, airway trees and routes, nodule measurements."""

from .components import Island, component_report, fill_holes, largest_component
from .nodules import NoduleMeasurement, instances_from_mask, measure_nodules, nodule_table
from .route import Route, plan_route
from .tree import AirwayTree, Branch, extract_tree

__all__ = [
    "AirwayTree",
    "Branch",
    "Island",
    "NoduleMeasurement",
    "Route",
    "component_report",
    "extract_tree",
    "fill_holes",
    "instances_from_mask",
    "largest_component",
    "measure_nodules",
    "nodule_table",
    "plan_route",
]
