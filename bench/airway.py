"""End-to-end AirwaySeg benchmark on a full-size chest phantom (512x512x300 at 0.7x0.7x1 mm by default).

The parent generates the phantom (``generate_chest(seed=1234, preset="full")``), writes its CT and airway ground
truth to a temporary folder and starts a child process that does what ``clinseg airway CT -o OUT --target
<largest nodule> --scope-diameter 4`` does: read the CT, run the pipeline, write every output (previews
included). The child's wall time and peak RSS (``ru_maxrss`` of the child, plus a 20 ms psutil sampler during
the pipeline alone) are therefore the user-visible figures, free of the phantom generator's memory. Then the
ATM'22 metrics against the ground truth are timed separately.

Run: ``.venv/bin/python bench/airway.py`` (default engine: auto), ``--engine classical`` or
``--model atm22-baseline`` (imports /work/shared/models/atm22_baseline/weight.pth into a temporary
CLINSEG_HOME when not installed). Targets: < 90 s and < 6 GB end to end; tree and route < 10 s each.
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

WEIGHTS = Path("/work/shared/models/atm22_baseline/weight.pth")


class RssSampler:
    """Peak resident memory of this process, sampled in a thread (torch's allocations included)."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s, self.peak = interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def child(args: argparse.Namespace) -> int:
    """Read, segment, write: one CLI-equivalent run; prints one JSON line."""
    import torch

    from clinseg.io import read_volume
    from clinseg.metrics.airway import airway_metrics
    from clinseg.output import write_result
    from clinseg.tasks.airway import AirwayOptions, run_airway
    from clinseg.tasks.airway.preview import render_airway_preview

    torch.set_num_threads(args.threads)
    work = Path(args.child)
    target = tuple(json.loads((work / "target.json").read_text()))
    start = time.perf_counter()
    ct = read_volume(work / "ct.nii.gz")
    read_s = time.perf_counter() - start
    options = AirwayOptions(engine=args.engine, model_id=args.model, target_lps=target, scope_diameter_mm=4.0)
    with RssSampler() as sampler:
        t = time.perf_counter()
        result = run_airway(ct, options)
        pipeline_s = time.perf_counter() - t
    t = time.perf_counter()
    def render(res, folder):
        return render_airway_preview(res, folder, ct)

    write_result(result, work / "out", overwrite=True, render=render)
    write_s = time.perf_counter() - t
    end_to_end_s = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    gt = read_volume(work / "gt.nii.gz")
    t = time.perf_counter()
    metrics = airway_metrics(result.labelmap, gt)
    metrics_s = time.perf_counter() - t
    timings = result.metrics["timings_s"]
    print(json.dumps({
        "engine": result.metrics["engine"], "model": result.metrics["engine_report"].get("model"),
        "end_to_end_s": round(end_to_end_s, 1), "peak_rss_mb": round(peak_mb), "read_s": round(read_s, 2),
        "pipeline_s": round(pipeline_s, 1), "pipeline_peak_rss_mb": round(sampler.peak / 2**20),
        "write_and_preview_s": round(write_s, 1), "stages_s": timings,
        "tree_s": timings.get("tree"), "route_s": timings.get("route"), "metrics_s": round(metrics_s, 1),
        "tree": {k: result.metrics["tree"][k] for k in ("branches", "max_generation", "loops_broken")},
        "route": {k: result.metrics["route"][k] for k in ("path_length_mm", "remaining_mm", "scope_stop")}
        if "route" in result.metrics else None,
        "vs_ground_truth": {k: round(float(metrics[k]), 4) for k in ("dice", "td", "bd", "precision")},
    }))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["auto", "model", "classical"], default="auto")
    parser.add_argument("--model", help="registered model id, e.g. atm22-baseline")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--preset", default="full")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the child")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    from clinseg.io import write_volume
    from clinseg.phantoms import generate_chest
    from clinseg.registry import get_registry

    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-airway-") as tmp:
        work = Path(tmp)
        if args.model == "atm22-baseline" and not get_registry().is_installed(args.model):
            env["CLINSEG_HOME"] = str(work / "home")
            os.environ["CLINSEG_HOME"] = env["CLINSEG_HOME"]
            get_registry().import_file(WEIGHTS)
        t = time.perf_counter()
        phantom = generate_chest(seed=args.seed, preset=args.preset)
        generate_s = time.perf_counter() - t
        target = max(phantom.nodules, key=lambda n: n.diameter_mm).center_lps
        write_volume(phantom.ct, work / "ct.nii.gz")
        write_volume(phantom.airway, work / "gt.nii.gz")
        (work / "target.json").write_text(json.dumps([float(v) for v in target]))
        shape = "x".join(map(str, phantom.ct.size_ijk))
        spacing = "x".join(f"{s:g}" for s in phantom.ct.spacing)
        del phantom
        cmd = [sys.executable, __file__, "--child", str(work), "--engine", args.engine, "--threads", str(args.threads)]
        if args.model:
            cmd += ["--model", args.model]
        load = os.getloadavg()[0]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures.update(phantom=f"seed {args.seed}, {shape} voxels at {spacing} mm",
                   phantom_generation_s=round(generate_s, 1),
                   load_average_1min_before=round(load, 2), cpu_count=os.cpu_count(), torch_threads=args.threads)
    print(json.dumps(figures, indent=1))
    ok = figures["end_to_end_s"] < 90 and figures["peak_rss_mb"] < 6 * 1024
    fast_post = all((figures.get(k) or 0) < 10 for k in ("tree_s", "route_s"))
    print(f"targets: end to end < 90 s and < 6 GB: {'met' if ok else 'NOT met'}; "
          f"tree and route < 10 s: {'met' if fast_post else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
