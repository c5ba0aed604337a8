"""NoduleSeg: lung nodule detection, per-nodule segmentation and measurements from chest CT."""

from .pipeline import NoduleOptions, run_nodule

__all__ = ["NoduleOptions", "run_nodule"]
