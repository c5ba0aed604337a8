"""How many threads CPU-bound numpy/scipy work may use."""

from __future__ import annotations

import os


def available_threads() -> int:
    """The CPUs this process may run on, or 1 when ``OMP_NUM_THREADS=1`` asks for a single thread (as torch reads
    it): batch workers and benchmarks that share a machine set it."""
    if os.environ.get("OMP_NUM_THREADS", "").strip() == "1":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
