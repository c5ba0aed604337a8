"""Batch runs: many cases, one or more chained tasks, resumable, on Dask distributed or in this process."""

from .cases import Case, CaseInput, discover_cases
from .manifest import finished_manifest, hash_inputs
from .run import BatchSummary, run_batch
from .schedule import dask_runner, sequential_runner
from .work import BatchPlan, CaseOutcome, process_case

__all__ = [
    "BatchPlan",
    "BatchSummary",
    "Case",
    "CaseInput",
    "CaseOutcome",
    "dask_runner",
    "discover_cases",
    "finished_manifest",
    "hash_inputs",
    "process_case",
    "run_batch",
    "sequential_runner",
]
