"""Inference engine: device choice, memory guard and sliding-window inference (pure torch, no files)."""

from .devices import device_available_bytes, host_available_bytes, select_device
from .memory import MemoryEstimate, MemoryPlan, estimate_memory, plan_memory
from .sliding_window import SlidingWindowInferer, window_starts
from .weighting import gaussian_importance

__all__ = [
    "MemoryEstimate",
    "MemoryPlan",
    "SlidingWindowInferer",
    "device_available_bytes",
    "estimate_memory",
    "gaussian_importance",
    "host_available_bytes",
    "plan_memory",
    "select_device",
    "window_starts",
]
