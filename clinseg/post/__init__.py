"""Post-processing of segmentations: components, skeletons, airway trees and routes."""

from .components import Island, component_report, fill_holes, largest_component
from .route import Route, plan_route
from .tree import AirwayTree, Branch, extract_tree

__all__ = [
    "AirwayTree",
    "Branch",
    "Island",
    "Route",
    "component_report",
    "extract_tree",
    "fill_holes",
    "largest_component",
    "plan_route",
]
