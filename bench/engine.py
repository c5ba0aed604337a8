"""Sliding-window inference benchmark: clinseg's engine vs MONAI's ``sliding_window_inference`` vs a naive
patch loop, with the same network (the ~4.1 M-parameter airway U-Net) on the same volume.

Each method runs in a child process of this script, so its peak memory is measured from a clean baseline:
peak RSS (sampled every 2 ms; torch's CPU allocations are invisible to tracemalloc) minus the RSS once the
network and the volume exist (a warm-up patch included). Throughput is voxels / wall time of the inference
call after that warm-up; CPU s (user + system) is less sensitive to other load than wall time. The fastest of
``--repeats`` interleaved rounds is shown: on a shared machine, compare only differences well above the noise.
Run: ``.venv/bin/python bench/engine.py --size 160``.
"""

from __future__ import annotations

import argparse
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

METHODS = ("clinseg", "monai", "naive")


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

    from clinseg.engine import SlidingWindowInferer

    process = psutil.Process()
    rss0 = process.memory_info().rss
    with PeakRSS() as peak:
        with torch.no_grad():  # warm-up: oneDNN picks its kernels on the first pass
            network(image[None, :, : args.patch, : args.patch, : args.patch])
        start, cpu0 = time.perf_counter(), sum(process.cpu_times()[:2])
        if args.child == "clinseg":
            inferer = SlidingWindowInferer(patch, overlap=args.overlap, batch_size=args.batch, device="cpu")
            out = inferer(image, network)
            extra = inferer.last_plan.describe()
        elif args.child == "monai":
            with torch.no_grad():
                out = sliding_window_inference(
                    image[None], patch, args.batch, network, overlap=args.overlap, mode="gaussian"
                )[0]
            extra = f"sw_batch_size {args.batch}"
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
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=2, help="rounds; the fastest time and median peak are shown")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    methods = args.methods.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    outputs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Rounds interleave the methods so that a burst of load elsewhere on the machine hits all of them.
        for _ in range(args.repeats):
            for method in methods:
                save = str(Path(tmp) / f"{method}.npy")
                cmd = [sys.executable, __file__, "--child", method, "--save", save]
                for flag in ("size", "patch", "overlap", "batch", "threads"):
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
    print(f"{'method':<10}{'seconds':>10}{'CPU s':>8}{'Mvox/s':>10}{'peak RSS MB':>14}   notes")
    for method, row in rows.items():
        print(
            f"{method:<10}{row['seconds']:>10.2f}{row['cpu_seconds']:>8.1f}{row['voxels_per_s'] / 1e6:>10.3f}"
            f"{row['peak_rss_mb']:>14.0f}   {row['extra']}"
        )
    if "clinseg" in rows and "monai" in rows:
        ours, theirs = rows["clinseg"], rows["monai"]
        diff = np.abs(ours["output"] - theirs["output"])
        print(
            f"ours/MONAI: throughput x{ours['voxels_per_s'] / theirs['voxels_per_s']:.2f}, "
            f"peak memory x{theirs['peak_rss_mb'] / max(ours['peak_rss_mb'], 1e-9):.2f} less; "
            f"|ours - MONAI| max {diff.max():.3g}, mean {diff.mean():.3g} (window grids differ slightly)"
        )


if __name__ == "__main__":
    main()
