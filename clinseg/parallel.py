"""How many threads CPU-bound numpy/scipy work may use."""

from __future__ import annotations

import os

_limit: int | None = None


def limit_threads(count: int | None) -> None:
    """Caps ``available_threads`` for this process (a batch worker's ``--threads``); None lifts the cap."""
    global _limit
    _limit = None if count is None else max(1, int(count))


def available_threads() -> int:
    """The CPUs this process may run on, capped by ``limit_threads``, or 1 when ``OMP_NUM_THREADS=1`` asks for a
    single thread (as torch reads it): batch workers and benchmarks that share a machine set it."""
    if os.environ.get("OMP_NUM_THREADS", "").strip() == "1":
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cpus, _limit) if _limit is not None else cpus
