"""AirwaySeg: airway tree, centerline tree and bronchoscopic route from chest CT."""

from .pipeline import AirwayOptions, run_airway, update_from_mask

__all__ = ["AirwayOptions", "run_airway", "update_from_mask"]
