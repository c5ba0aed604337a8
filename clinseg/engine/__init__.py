"""Inference engine: device choice, memory guard and sliding-window inference (pure torch, no files)."""

from .devices import (
    cpu_has_native_bf16,
    device_available_bytes,
    host_available_bytes,
    select_device,
    select_precision,
)
from .memory import MemoryEstimate, MemoryPlan, estimate_memory, plan_memory
from .sliding_window import SlidingWindowInferer, window_starts
from .weighting import gaussian_importance

__all__ = [
    "MemoryEstimate",
    "MemoryPlan",
    "SlidingWindowInferer",
    "cpu_has_native_bf16",
    "device_available_bytes",
    "estimate_memory",
    "gaussian_importance",
    "host_available_bytes",
    "plan_memory",
    "select_device",
    "select_precision",
    "window_starts",
]
