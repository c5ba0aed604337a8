"""The OAR thesis's compression table (chapter 4, Tables 4-3 to 4-5) on head & neck phantoms, plus INT8 through
ONNX Runtime as the modern comparison.

Usage: .venv/bin/python bench/oar_compression.py [--grid 32 64 64] [--train-steps 200] [--steps 10]
       [--time-grid 48 128 128] [--cache out/oar-compression]

The stage-1 model is the thesis's U-Net at full width (24; 3,154,896 kernel weights). It is part A's trained model
when ``clinseg/models/oar-unet-phantom`` has this bench's 9 classes, else one trained here (focal loss, Adam 1e-3,
batch 1) on phantoms and cached. Then the thesis's sequence: channel pruning 5 % steps to 20 % (masked fine-tuning
after each, the thesis does 2000 iterations, we do ``--steps``), channel removal, threshold pruning 0.01 then 0.02,
31-level STE quantisation. Printed per stage: parameters, kernel weights, file size, peak memory and CPU time of one
forward pass at ``--time-grid`` (each in a fresh process, 1 thread), mean Dice over the 8 organs on held-out
phantoms. Torch threads are 1 throughout (the CPU is shared).
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
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from clinseg.compress import (
    CompressionPlan,
    Stage,
    compress,
    fine_tune,
    load_packed,
    model_size_report,
    save_packed,
    snapshot,
)
from clinseg.nets.counting import count_parameters
from clinseg.nets.oar_unet import STAGE1_CLASSES, OARUNet, channels_from_state_dict
from clinseg.phantoms.oar_stage1 import STAGE1_ORGANS, stage1_cases
from clinseg.train.oar_losses import focal_loss

ROOT = Path(__file__).resolve().parents[1]
PART_A_MODEL = ROOT / "clinseg" / "models" / "oar-unet-phantom" / "model.safetensors"
TRAIN_SEEDS, TEST_SEEDS = range(101, 109), range(201, 204)


def build(state: dict[str, torch.Tensor]) -> OARUNet:
    return OARUNet(channels=channels_from_state_dict(state))


def batches(cases, seed: int = 0):
    rng = np.random.default_rng(seed)
    while True:
        image, labels = cases[int(rng.integers(len(cases)))]
        yield image[None], labels[None]


def trained_model(args, train) -> OARUNet:
    if PART_A_MODEL.exists():
        state = {k.removeprefix("stage1."): v for k, v in load_file(PART_A_MODEL).items() if k.startswith("stage1.")}
        # Part A's model is usable here only with this bench's classes (background + STAGE1_ORGANS).
        if state and state["convs.conv15.weight"].shape[0] == len(STAGE1_ORGANS) + 1:
            print(f"model: part A's stage 1 from {PART_A_MODEL}")
            model = build(state)
            model.load_state_dict(state)
            return model.eval()
    cached = args.cache / f"stage1-{'x'.join(map(str, args.grid))}-{args.train_steps}.safetensors"
    model = OARUNet()
    if cached.exists():
        print(f"model: cached {cached}")
        model.load_state_dict(load_file(cached))
        return model.eval()
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    stream = batches(train, seed=1)
    model.train()
    start = time.perf_counter()
    for step in range(1, args.train_steps + 1):
        image, labels = next(stream)
        optimiser.zero_grad(set_to_none=True)
        loss = focal_loss(model(image), labels)
        loss.backward()
        optimiser.step()
        if step % 25 == 0:
            print(f"  train step {step}: focal {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    save_file(model.state_dict(), str(cached))
    return model.eval()


def dice_per_organ(predict, cases) -> np.ndarray:
    """(cases, 8) Dice of the argmax prediction; an organ absent from both counts as 1."""
    rows = []
    for image, labels in cases:
        pred = np.asarray(predict(image[None])).argmax(axis=1)[0]
        truth = labels.numpy()
        row = []
        for k in range(1, STAGE1_CLASSES):
            a, b = pred == k, truth == k
            total = int(a.sum() + b.sum())
            row.append(1.0 if total == 0 else 2.0 * int((a & b).sum()) / total)
        rows.append(row)
    return np.array(rows)


def torch_predict(model):
    def run(image):
        with torch.no_grad():
            return model(image).numpy()
    return run


# --- measurement in a fresh process: peak memory and CPU time of one forward pass ---------------------------------


def measure(kind: str, path: str, grid: list[int], repeats: int) -> dict:
    torch.set_num_threads(1)
    image = np.random.default_rng(0).random((1, 1, *grid), dtype=np.float32)
    if kind == "onnx":
        from clinseg.compress.onnx_int8 import OnnxModel

        model = OnnxModel(path, threads=1)
        run = model
    else:
        state = load_packed(path)[0] if kind == "packed" else load_file(path)
        net = build(state)
        net.load_state_dict(state)
        net.eval()

        def run(x):
            with torch.no_grad():
                return net(torch.from_numpy(x))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        run(image)
        times.append(time.process_time() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"cpu_s": min(times), "peak_mib": peak, "loaded_mib": base}


def measured(kind: str, path: Path, args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", kind, str(path), "--time-grid",
                          *map(str, args.time_grid), "--repeats", str(args.repeats)],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the table --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, nargs=3, default=[32, 64, 64], help="stage-1 grid D H W")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10, help="fine-tuning steps after each compression step")
    parser.add_argument("--time-grid", type=int, nargs=3, default=[48, 128, 128])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=ROOT / "out" / "oar-compression")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.measure:
        print(json.dumps(measure(*args.measure, args.time_grid, args.repeats)))
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    grid = tuple(args.grid)
    train, test = stage1_cases(TRAIN_SEEDS, grid), stage1_cases(TEST_SEEDS, grid)
    model = trained_model(args, train)
    plan = CompressionPlan(steps=args.steps, lr=1e-4)
    stages = compress(model, build, batches(train, seed=2), focal_loss, plan, log=lambda s: print("  " + s, flush=True))
    # Control: the original fine-tuned for as many steps as the compression had, uncompressed. A short-trained
    # model still improves with every step, so Dice changes are read against this row, not only the first.
    total = plan.steps * (len(plan.fractions()) + len(plan.thresholds()) + 1)
    control = snapshot(stages[0].model, build)
    fine_tune(control, batches(train, seed=2), focal_loss, total, plan.lr)
    stages.insert(1, Stage(f"control: original + {total} steps", control.eval()))

    rows = []
    for index, stage in enumerate(stages):
        if stage.quantiser is not None:
            path = args.cache / f"stage{index}.packed.safetensors"
            save_packed(stage.model, path, stage.quantiser, metadata={"channels": stage.model.layer_channels()})
            kind = "packed"
            one_byte = model_size_report(stage.model, stage.quantiser, bits=8).packed_bytes
        else:
            path = args.cache / f"stage{index}.safetensors"
            save_file(stage.model.state_dict(), str(path))
            kind, one_byte = "torch", None
        report = model_size_report(stage.model)
        rows.append({"stage": stage.name, "params": report.params, "weights": report.weights_only,
                     "kernel_mib": report.weights_only_bytes / 2**20, "file_mib": path.stat().st_size / 2**20,
                     "one_byte_mib": None if one_byte is None else one_byte / 2**20, "sparsity": report.sparsity,
                     "dice": dice_per_organ(torch_predict(stage.model), test), **measured(kind, path, args)})
    if not args.no_onnx:
        from clinseg.compress.onnx_int8 import OnnxModel, export_onnx, quantise_int8

        calibration = [image[None].numpy() for image, _ in train[:4]]
        example = train[0][0][None]
        for name, label, stage in (("original", "ONNX Runtime INT8 (original)", stages[0]),
                                   ("pruned", f"ONNX Runtime INT8 ({stages[2].name})", stages[2])):
            float_path = export_onnx(stage.model, example, args.cache / f"{name}.float.onnx")
            int8 = quantise_int8(float_path, float_path.with_suffix(".int8.onnx"), calibration)
            weights = count_parameters(stage.model)
            if name == "pruned":  # what ONNX Runtime gains without INT8
                rows.append({"stage": f"ONNX Runtime float ({stage.name})", "params": weights.full,
                             "weights": weights.weights_only, "kernel_mib": 4 * weights.weights_only / 2**20,
                             "file_mib": float_path.stat().st_size / 2**20, "one_byte_mib": None,
                             "sparsity": float("nan"), "dice": dice_per_organ(OnnxModel(float_path), test),
                             **measured("onnx", float_path, args)})
            rows.append({"stage": label, "params": weights.full, "weights": weights.weights_only,
                         "kernel_mib": weights.weights_only / 2**20, "file_mib": int8.stat().st_size / 2**20,
                         "one_byte_mib": None, "sparsity": float("nan"),
                         "dice": dice_per_organ(OnnxModel(int8), test), **measured("onnx", int8, args)})
    print_table(rows, args, time.perf_counter() - started)


def print_table(rows: list[dict], args, elapsed: float) -> None:
    base, control = rows[0], rows[1]  # sizes and times against the original, Dice against the control
    print(f"\nstage-1 grid {tuple(args.grid)}, timing grid {tuple(args.time_grid)}, 1 thread; "
          f"test phantoms {list(TEST_SEEDS)}; fine-tuning {args.steps} steps per step (thesis: 2000)")
    head = (f"{'stage':40} {'params':>9} {'kernels':>9} {'kern MiB':>8} {'file MiB':>8} {'x smaller':>9} "
            f"{'peak MiB':>8} {'CPU s':>6} {'x faster':>8} {'sparsity':>8} {'Dice':>6} {'dDice':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        dice = float(r["dice"].mean())
        print(f"{r['stage']:40} {r['params']:>9,} {r['weights']:>9,} {r['kernel_mib']:>8.2f} {r['file_mib']:>8.2f} "
              f"{base['file_mib'] / r['file_mib']:>9.2f} {r['peak_mib']:>8.0f} {r['cpu_s']:>6.2f} "
              f"{base['cpu_s'] / r['cpu_s']:>8.2f} {r['sparsity']:>8.3f} {dice:>6.3f} "
              f"{dice - float(control['dice'].mean()):>+7.3f}")
        if r["one_byte_mib"] is not None:
            print(f"{'':40} (one byte per weight, the thesis's 1.9M measure: {r['one_byte_mib']:.2f} MiB)")
    print("\nper-organ Dice (mean over test phantoms):")
    print(f"{'stage':40} " + " ".join(f"{o[:9]:>9}" for o in STAGE1_ORGANS))
    for r in rows:
        print(f"{r['stage']:40} " + " ".join(f"{v:>9.3f}" for v in r["dice"].mean(axis=0)))
    print(f"\nthesis: 12.03M -> 7.78M (pruned) -> 1.9M (31 levels), memory 3G -> 2G, 30 s -> 20 s, "
          f"Dice 0.670 -> 0.654 -> 0.650 -> 0.646.  bench time {elapsed:.0f} s")


if __name__ == "__main__":
    main()
