"""``clinseg batch`` throughput: 20 small chest phantoms (18 good, 2 corrupt), airway task (classical engine).

Runs, each into a fresh output folder unless said:
0. this process alone (``--scheduler none``), the reference;
1. a Dask LocalCluster of 1 worker, then of 2 workers (cases/min, cluster start included);
2. the 2-worker batch again into the same folder (resume: every good case skipped; the 2 corrupt ones retried,
   which starts a cluster), and the 1-worker folder resumed in this process (``--scheduler none``);
3. a 2-worker batch where one worker is SIGKILLed while it writes a case (the case is redone elsewhere).
Each run must finish 18 and report the 2 corrupt files.

Run: ``.venv/bin/python bench/batch.py`` (``--cases 20 --grid 64,64,48 --spacing 3.2``). On a shared 2-core machine
the 2-worker speed-up is bounded by what the other processes leave free.
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path


def make_cases(folder: Path, n: int, grid: tuple[int, int, int], spacing: float) -> int:
    """``n - 2`` phantoms (distinct seeds) and 2 corrupt files; returns the number of good cases."""
    from clinseg.io import write_volume
    from clinseg.phantoms import generate_chest

    folder.mkdir(parents=True, exist_ok=True)
    good = n - 2
    for i in range(good):
        ph = generate_chest(100 + i, preset="small", spacing=(spacing,) * 3, shape=grid, with_vessels=False,
                            n_nodules=0, n_distractors=0)
        write_volume(ph.ct, folder / f"case{i:02d}.nii.gz")
    (folder / "corrupt_bytes.nii.gz").write_bytes(os.urandom(4096))
    data = (folder / "case00.nii.gz").read_bytes()
    (folder / "corrupt_truncated.nii.gz").write_bytes(data[: len(data) // 3])
    return good


def kill_one_worker(out: Path, stop: threading.Event, killed: list) -> None:
    """SIGKILL the worker named in the log of the first case being written."""
    while not stop.is_set() and not killed:
        for log in out.glob(".case*.tmp/log.txt"):
            text = log.read_text()
            if " on worker " in text:
                pid = int(text.split(" on worker ")[1].split()[0].rsplit(":", 1)[1])
                os.kill(pid, signal.SIGKILL)
                killed.append((log.parent.name.split(".")[1], pid))
                return
        time.sleep(0.01)


def timed_run(cases, plan, workers: int, kill: bool = False) -> tuple[float, object, list]:
    from clinseg.batch import dask_runner, run_batch

    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_one_worker, args=(Path(plan.out_dir), stop, killed), daemon=True)
    if kill:
        Path(plan.out_dir).mkdir(parents=True, exist_ok=True)
        watcher.start()
    start = time.perf_counter()
    with dask_runner(workers=workers) as runner:
        summary = run_batch(cases, plan, runner)
    seconds = time.perf_counter() - start
    stop.set()
    if kill:
        watcher.join()
    return seconds, summary, killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--grid", default="64,64,48", help="i,j,k voxels of each phantom")
    parser.add_argument("--spacing", type=float, default=3.2, help="isotropic mm")
    args = parser.parse_args()

    from clinseg import __version__
    from clinseg.batch import BatchPlan, discover_cases, run_batch, sequential_runner
    from clinseg.tasks.catalog import get_task

    root = Path(tempfile.mkdtemp(prefix="clinseg-batch-bench-"))
    try:
        grid = tuple(int(v) for v in args.grid.split(","))
        good = make_cases(root / "in", args.cases, grid, args.spacing)
        cases = discover_cases(root / "in", ["ct"])
        tasks = {"airway": get_task("airway").options({"engine": "classical"})}
        print(f"{len(cases)} cases ({good} good, {len(cases) - good} corrupt), grid {grid} at {args.spacing} mm; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

        def plan(name: str) -> BatchPlan:
            return BatchPlan(str(root / name), tasks, __version__)

        def line(label: str, seconds: float, summary, ran: int) -> None:
            rate = f"{60 * ran / seconds:6.1f} cases/min" if ran else "      -"
            print(f"{label:<28} {seconds:7.1f} s  {rate}  done {summary.done}  failed {len(summary.failed)}  "
                  f"skipped {summary.skipped}")
            assert summary.done == good and len(summary.failed) == len(cases) - good

        start = time.perf_counter()
        summary = run_batch(cases, plan("out0"), sequential_runner())
        line("--scheduler none", time.perf_counter() - start, summary, len(cases))
        for workers in (1, 2):
            seconds, summary, _ = timed_run(cases, plan(f"out{workers}"), workers)
            line(f"{workers} worker{'s' if workers > 1 else ''}", seconds, summary, len(cases))
        seconds, summary, _ = timed_run(cases, plan("out2"), 2)
        line("resume (2 workers)", seconds, summary, 0)
        assert summary.skipped == good
        start = time.perf_counter()
        summary = run_batch(cases, plan("out1"), sequential_runner())
        line("resume (--scheduler none)", time.perf_counter() - start, summary, 0)
        assert summary.skipped == good
        seconds, summary, killed = timed_run(cases, plan("killed"), 2, kill=True)
        line(f"2 workers, one killed ({killed[0][0] if killed else 'none'})", seconds, summary, len(cases))
        ids = [o.case_id for o in summary.outcomes]
        assert killed and len(ids) == len(set(ids)) == len(cases)
        assert not [p for p in (root / "killed").iterdir() if p.name.startswith(".")]
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
