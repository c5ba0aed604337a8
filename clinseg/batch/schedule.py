"""Where cases run: in this process one after another, or on Dask distributed (a local cluster or a scheduler
address). Both are a ``Runner``: cases in, ``(case, outcome)`` pairs out in completion order, so the batch driver is
one code path whatever runs the cases.

On Dask each worker advertises a ``case`` resource and each case asks for one unit of it, so a worker holds as many
heavy cases as its resource says (one by default) however many threads it has. A worker that dies mid-case (killed,
out of memory) has its case rescheduled on another worker by the scheduler; a case that kills
``distributed.scheduler.allowed-failures`` + 1 workers (3 + 1 by default) is reported failed instead.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator

from ..errors import InputError
from ..progress import CancelToken
from .cases import Case
from .work import BatchPlan, CaseOutcome, one_line, process_case, record_failure

Runner = Callable[[list[Case], BatchPlan], Iterator[tuple[Case, CaseOutcome]]]
RESOURCE = "case"
INSTALL_HINT = "pip install 'clinseg[batch]' (or: pip install 'dask[distributed]'), or run with --scheduler none"


def sequential_runner(cancel: CancelToken | None = None) -> Runner:
    """Cases one after another in this process (no Dask needed)."""

    def run(cases: list[Case], plan: BatchPlan) -> Iterator[tuple[Case, CaseOutcome]]:
        for case in cases:
            if cancel is not None:
                cancel.check("batch")
            yield case, process_case(case, plan, cancel)

    return run


def import_distributed():
    try:
        import distributed
    except ImportError:
        raise InputError("--scheduler", f"Dask distributed is not installed: {INSTALL_HINT}") from None
    return distributed


def _outcome(distributed, future, case: Case, plan: BatchPlan) -> CaseOutcome:
    """The case's outcome, or a failed one when no worker could bring it back."""
    try:
        outcome = future.result()
    except distributed.KilledWorker:
        outcome = record_failure(case, plan, "its worker died on every try (out of memory?)")
    except Exception as error:  # e.g. a worker without clinseg: reported, the rest go on
        outcome = record_failure(case, plan, f"worker error: {one_line(error)}")
    future.release()
    return outcome


def _has_case_resource(client) -> bool:
    workers = client.scheduler_info().get("workers", {})
    return any(RESOURCE in (w.get("resources") or {}) for w in workers.values())


def _connect(distributed, scheduler: str | None, workers: int, cases_per_worker: int, memory_limit: str,
             wait_s: float):
    """A client of the scheduler at ``scheduler``, or of a new local cluster; returns ``(client, cluster)``."""
    try:
        if scheduler:
            try:
                return distributed.Client(scheduler, timeout=f"{int(wait_s)}s"), None
            except (OSError, TimeoutError) as error:
                raise InputError(scheduler, f"no Dask scheduler answers there ({one_line(error)})") from None
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=cases_per_worker, processes=True,
            resources={RESOURCE: cases_per_worker}, memory_limit=memory_limit, dashboard_address=None,
            silence_logs=logging.ERROR)
        return distributed.Client(cluster), cluster
    except InputError:
        raise
    except Exception as error:
        raise InputError("--scheduler", f"cannot start Dask ({one_line(error)})") from None


@contextlib.contextmanager
def dask_runner(scheduler: str | None = None, workers: int = 1, cases_per_worker: int = 1,
                memory_limit: str = "auto", log: Callable[[str], None] | None = None,
                wait_s: float = 60.0, cancel: CancelToken | None = None) -> Iterator[Runner]:
    """A ``Runner`` on a Dask cluster: the one at ``scheduler`` (``tcp://host:8786``), else a new local cluster of
    ``workers`` processes, each with ``cases_per_worker`` threads and as many units of the ``case`` resource.

    The cluster is reached only when there are cases to run, so a re-run with everything finished starts nothing.
    ``cancel`` is checked twice a second; a cancelled batch cancels its cases still on the cluster.
    """
    distributed = import_distributed()
    say = log or (lambda text: None)
    held: dict = {}

    def client_and_resources():
        if not held:
            client, cluster = _connect(distributed, scheduler, workers, cases_per_worker, memory_limit, wait_s)
            held.update(client=client, cluster=cluster)
            client.wait_for_workers(1, timeout=wait_s)
            held["resources"] = {RESOURCE: 1} if _has_case_resource(client) else None
            if held["resources"] is None:
                say(f"the Dask workers have no '{RESOURCE}' resource (start them with --resources {RESOURCE}=1): "
                    "cases are not limited to one per worker")
        return held["client"], held["resources"]

    def run(cases: list[Case], plan: BatchPlan) -> Iterator[tuple[Case, CaseOutcome]]:
        client, resources = client_and_resources()
        run_id = uuid.uuid4().hex[:8]
        futures = {client.submit(process_case, case, plan, key=f"clinseg-case-{case.case_id}-{run_id}",
                                 pure=False, resources=resources): case for case in cases}
        pending = set(futures)
        try:
            while pending:
                if cancel is not None:
                    cancel.check("batch")
                try:
                    finished, pending = distributed.wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    continue
                for future in finished:
                    yield futures[future], _outcome(distributed, future, futures[future], plan)
        finally:
            client.cancel(list(futures))  # an interrupted batch leaves nothing running on the cluster

    try:
        yield run
    finally:
        if held:
            held["client"].close()
            if held["cluster"] is not None:
                held["cluster"].close()
