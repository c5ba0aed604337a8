"""Sliding-window inference benchmark: clinseg's engine vs MONAI's ``sliding_window_inference`` vs a naive
patch loop, with the same network (the ~4.1 M-parameter airway U-Net) on the same volume.

Each method runs in a child process of this script, so its peak memory is measured from a clean baseline:
peak RSS (sampled every 2 ms; torch's CPU allocations are invisible to tracemalloc) minus the RSS once the
network and the volume exist and a small warm-up patch has run in the method's precision. Throughput is
voxels / wall time of the inference call; CPU s (user + system) is less sensitive to other load than wall time.
The fastest of ``--repeats`` interleaved rounds is shown: on a shared machine, compare only differences well
above the noise.

Our engine runs at its default ``auto`` precision (bfloat16 autocast on a CPU with native bfloat16, else
float32); MONAI and the naive loop run as their callers usually do, in float32. Two optional methods attribute
the difference: ``clinseg-fp32`` (our engine forced to float32) and ``monai-bf16`` (MONAI's inferer called
inside a bfloat16 autocast by its caller).
Run: ``.venv/bin/python bench/engine.py --size 160 --repeats 3 --methods clinseg,monai,clinseg-fp32,monai-bf16``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from torch import nn

from clinseg.engine import window_starts

METHODS = ("clinseg", "monai", "naive", "clinseg-fp32", "monai-bf16")
DEFAULT_METHODS = "clinseg,monai,naive"


class PeakRSS:
    """Samples this process's resident set size on a thread; ``peak`` is the largest seen."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.process = psutil.Process()
        self.interval_s = interval_s
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def build_network() -> tuple[nn.Module, str]:
    torch.manual_seed(0)
    try:
        from clinseg.nets.airway_unet import AirwayUNet
    except ImportError:  # the airway net is absent: a plain U-Net of similar size
        from monai.networks.nets import BasicUNet

        return BasicUNet(3, 1, 1, features=(8, 16, 32, 64, 128, 8)), "MONAI BasicUNet"
    return AirwayUNet(), "AirwayUNet"


def naive_loop(image: torch.Tensor, network: nn.Module, patch: int, overlap: float) -> torch.Tensor:
    """Batch 1, no weighting: each window's prediction overwrites the previous one."""
    starts = [window_starts(s, patch, overlap) for s in image.shape[1:]]
    out = None
    with torch.no_grad():
        for z in starts[0]:
            for y in starts[1]:
                for x in starts[2]:
                    pred = network(image[None, :, z : z + patch, y : y + patch, x : x + patch])[0]
                    if out is None:
                        out = torch.zeros((pred.shape[0], *image.shape[1:]))
                    out[:, z : z + patch, y : y + patch, x : x + patch] = pred
    return out


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    network, name = build_network()
    network.eval()
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((1, args.size, args.size, args.size), dtype=np.float32))
    patch = (args.patch,) * 3
    # Imports happen before the baseline: module code is not the method's working memory.
    from monai.inferers import sliding_window_inference

    from clinseg.engine import SlidingWindowInferer, select_precision

    if args.child.startswith("clinseg"):
        precision = "float32" if args.child == "clinseg-fp32" else args.precision
        warm_dtype = select_precision(precision, torch.device("cpu"))
    else:
        warm_dtype = torch.bfloat16 if args.child == "monai-bf16" else torch.float32
    # Warm-up in the method's own precision on a small patch, before the baseline: oneDNN and autocast set
    # themselves up once, and a full-size warm-up would leave its (float32) activations in the peak.
    warm = torch.autocast("cpu", dtype=warm_dtype) if warm_dtype != torch.float32 else contextlib.nullcontext()
    with torch.no_grad(), warm:
        network(image[None, :, :32, :32, :32])
    process = psutil.Process()
    rss0 = process.memory_info().rss
    with PeakRSS() as peak:
        start, cpu0 = time.perf_counter(), sum(process.cpu_times()[:2])
        if args.child.startswith("clinseg"):
            inferer = SlidingWindowInferer(
                patch, overlap=args.overlap, batch_size=args.batch, device="cpu", precision=precision
            )
            out = inferer(image, network)
            extra = f"{str(inferer.last_precision).removeprefix('torch.')}, {inferer.last_plan.describe()}"
        elif args.child.startswith("monai"):
            low = args.child == "monai-bf16"
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if low else contextlib.nullcontext()
            with torch.no_grad(), autocast:
                out = sliding_window_inference(
                    image[None], patch, args.batch, network, overlap=args.overlap, mode="gaussian"
                )[0].float()
            extra = f"{'bfloat16' if low else 'float32'}, sw_batch_size {args.batch}"
        else:
            out = naive_loop(image, network, args.patch, args.overlap)
            extra = "batch 1, overwrite"
        seconds = time.perf_counter() - start
    cpu_seconds = sum(process.cpu_times()[:2]) - cpu0
    np.save(args.save, out.numpy())
    print(
        json.dumps(
            {
                "method": args.child,
                "network": name,
                "params": sum(p.numel() for p in network.parameters()),
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "voxels_per_s": args.size**3 / seconds,
                "peak_rss_mb": (peak.peak - rss0) / 2**20,
                "extra": extra,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="cube edge of the test volume (voxels)")
    parser.add_argument("--patch", type=int, default=96, help="cube edge of a window (multiple of 16)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=1, help="windows per forward pass (ours and MONAI)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="our engine's precision (auto, float32, bfloat16)")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated, among {', '.join(METHODS)}")
    # One round at the default 256^3 takes 10-15 min on 2 busy cores; use more rounds on smaller volumes.
    parser.add_argument("--repeats", type=int, default=1, help="rounds; the fastest time and median peak are shown")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose among {', '.join(METHODS)}")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    outputs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Rounds interleave the methods so that a burst of load elsewhere on the machine hits all of them.
        for _ in range(args.repeats):
            for method in methods:
                save = str(Path(tmp) / f"{method}.npy")
                cmd = [sys.executable, __file__, "--child", method, "--save", save]
                for flag in ("size", "patch", "overlap", "batch", "threads", "precision"):
                    cmd += [f"--{flag}", str(getattr(args, flag))]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs[method].append(json.loads(done.stdout.strip().splitlines()[-1]))
                outputs.setdefault(method, np.load(save))
    rows = {}
    for method, results in runs.items():
        best = min(results, key=lambda r: r["seconds"])
        rows[method] = {**best, "peak_rss_mb": float(np.median([r["peak_rss_mb"] for r in results]))}
        rows[method]["output"] = outputs[method]

    first = next(iter(rows.values()))
    print(
        f"volume {args.size}^3, patch {args.patch}^3, overlap {args.overlap}, {args.threads} threads, "
        f"{first['network']} ({first['params'] / 1e6:.2f} M parameters), torch {torch.__version__}"
    )
    print(f"best of {args.repeats} interleaved rounds (time), median peak RSS above the loaded-network baseline")
    print(f"{'method':<14}{'seconds':>9}{'CPU s':>8}{'Mvox/s':>9}{'peak RSS MB':>13}   notes")
    for method, row in rows.items():
        print(
            f"{method:<14}{row['seconds']:>9.2f}{row['cpu_seconds']:>8.1f}{row['voxels_per_s'] / 1e6:>9.3f}"
            f"{row['peak_rss_mb']:>13.0f}   {row['extra']}"
        )
    for ours_name, theirs_name in (("clinseg", "monai"), ("clinseg-fp32", "monai"), ("clinseg", "monai-bf16")):
        if ours_name in rows and theirs_name in rows:
            compare(ours_name, rows[ours_name], theirs_name, rows[theirs_name])


def compare(ours_name: str, ours: dict, theirs_name: str, theirs: dict) -> None:
    """Throughput and memory ratios, and how far the two outputs are apart (as probabilities and masks)."""
    p, q = torch.sigmoid(torch.from_numpy(ours["output"])), torch.sigmoid(torch.from_numpy(theirs["output"]))
    a, b = p > 0.5, q > 0.5
    dice = 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)
    print(
        f"{ours_name}/{theirs_name}: throughput x{ours['voxels_per_s'] / theirs['voxels_per_s']:.2f}, "
        f"peak memory x{theirs['peak_rss_mb'] / max(ours['peak_rss_mb'], 1e-9):.2f} less; "
        f"|p - p_ref| max {float((p - q).abs().max()):.3g}, mean {float((p - q).abs().mean()):.2g}, "
        f"Dice(p>0.5) {dice:.4f} (window grids differ slightly)"
    )


if __name__ == "__main__":
    main()
