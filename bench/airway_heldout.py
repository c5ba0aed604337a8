"""Held-out AirwaySeg evaluation: ATM'22 metrics of every available engine on phantoms no model was trained on.

Cases:
* synthetic chest phantoms, seeds 1000-1005 (training uses other seeds), at mixed clinical spacings, with vessels
  and 2-3 nodules each, full adult field of view (358 x 358 x 300 mm);
* phantoms built around the three real ATM'22 airway trees in /work/shared/data/atm22_airways/timi
  (``generate_chest_from_airway``; the real tree is the ground truth). Their native grids (512 x 512 x 382-682)
  are downsampled by ``--real-factor`` (default 2) for time: the mask is resampled linearly and thresholded at
  0.5, keeping its largest component, so the thinnest peripheral branches of the real tree are partly lost.

Engines: ``classical`` (no weights); ``atm22-baseline`` when its official weights are at
/work/shared/models/atm22_baseline/weight.pth or already installed (imported into a temporary CLINSEG_HOME, so
the user's cache is untouched); any other installed airway model given with ``--models`` (e.g.
``airway-unet-phantom``). Per case: DSC, TD, BD, precision (fractions) and the pipeline's wall time.

``--cache DIR`` keeps each generated case (CT and airway label as NIfTI) so that later runs, e.g. with another
model, skip the generation.

Run: ``.venv/bin/python bench/airway_heldout.py --quick --json heldout.json`` (2 synthetic cases at 1.0-1.5 mm
and one real-tree phantom; minutes on 2 cores), or without ``--quick`` for all 6 + 3 cases (much longer).
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from clinseg.metrics.airway import aggregate, airway_metrics
from clinseg.phantoms import ChestPhantom, generate_chest, generate_chest_from_airway

WEIGHTS = Path("/work/shared/models/atm22_baseline/weight.pth")
REAL_TREES = Path("/work/shared/data/atm22_airways/timi")
# seed -> spacing (i, j, k mm): in-plane 0.5-1.5 mm, slices 1.0-1.5 mm
SYNTHETIC = {1000: (0.5, 0.5, 1.0), 1001: (0.7, 0.7, 1.0), 1002: (0.7, 0.7, 1.5), 1003: (1.0, 1.0, 1.0),
             1004: (1.0, 1.0, 1.5), 1005: (1.5, 1.5, 1.5)}
QUICK_SEEDS = (1004, 1005)
REAL_IDS = ("ATM_224", "ATM_305", "ATM_307")
KEYS = ("dice", "td", "bd", "precision")


def synthetic_case(seed: int) -> tuple[str, ChestPhantom]:
    spacing = SYNTHETIC[seed]
    phantom = generate_chest(seed=seed, spacing=spacing, n_nodules=2 + seed % 2, with_vessels=True)
    return f"phantom {seed} @ {'x'.join(f'{s:g}' for s in spacing)} mm", phantom


def real_tree_case(case_id: str, factor: int, seed: int) -> tuple[str, ChestPhantom]:
    """A synthetic chest around the real ATM'22 tree ``case_id``, downsampled ``factor`` times per axis."""
    from clinseg.io import read_volume
    from clinseg.post.components import largest_component
    from clinseg.preprocess import resample

    mask = read_volume(REAL_TREES / f"{case_id}.nii.gz")
    if factor > 1:
        soft = mask.with_array((mask.array > 0).astype(np.float32))
        coarse = resample(soft, tuple(s * factor for s in mask.spacing), order=1)
        mask = coarse.with_array(largest_component(coarse.array >= 0.5).astype(np.uint8), name=case_id)
    phantom = generate_chest_from_airway(mask, seed=seed)
    spacing = "x".join(f"{s:.2g}" for s in mask.spacing)
    return f"{case_id} tree /{factor} @ {spacing} mm", phantom


@contextlib.contextmanager
def model_home(home: str | None) -> Iterator[None]:
    """Run with ``CLINSEG_HOME`` = ``home`` (None: leave as is)."""
    old = os.environ.get("CLINSEG_HOME")
    if home is not None:
        os.environ["CLINSEG_HOME"] = home
    try:
        yield
    finally:
        if home is not None:
            if old is None:
                os.environ.pop("CLINSEG_HOME", None)
            else:
                os.environ["CLINSEG_HOME"] = old


def available_engines(models: list[str], scratch: Path) -> tuple[dict[str, str | None], list[str]]:
    """engine label -> CLINSEG_HOME to use (None: the current one); plus notes on what was skipped."""
    from clinseg.registry import get_registry

    engines: dict[str, str | None] = {"classical": None}
    notes = []
    registry = get_registry()
    for model_id in ["atm22-baseline", *[m for m in models if m != "atm22-baseline"]]:
        if registry.is_installed(model_id):
            engines[model_id] = None
        elif model_id == "atm22-baseline" and WEIGHTS.is_file():
            home = str(scratch / "home")
            with model_home(home):
                get_registry().import_file(WEIGHTS)
            engines[model_id] = home
        else:
            notes.append(f"{model_id}: not installed, skipped")
    return engines, notes


def evaluate(ct, airway, engine: str, home: str | None) -> dict:
    from clinseg.tasks.airway import AirwayOptions, run_airway

    options = AirwayOptions(engine="classical") if engine == "classical" else AirwayOptions(model_id=engine)
    with model_home(home):
        start = time.perf_counter()
        result = run_airway(ct, options)
        seconds = time.perf_counter() - start
    metrics = airway_metrics(result.labelmap, airway)
    row = {k: round(float(metrics[k]), 4) for k in KEYS}
    row.update(time_s=round(seconds, 1), branches=result.metrics["tree"]["branches"])
    return row


def cached(make, key: str, cache: Path | None):
    """``(name, ct, airway)`` of a case, generated by ``make`` or read back from ``cache``."""
    from clinseg.io import read_volume, write_volume

    if cache is not None and (cache / f"{key}.json").is_file():
        name = json.loads((cache / f"{key}.json").read_text())["name"]
        return name, read_volume(cache / f"{key}_ct.nii.gz"), read_volume(cache / f"{key}_airway.nii.gz")
    name, phantom = make()
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        write_volume(phantom.ct, cache / f"{key}_ct.nii.gz")
        write_volume(phantom.airway, cache / f"{key}_airway.nii.gz")
        (cache / f"{key}.json").write_text(json.dumps({"name": name}))
    return name, phantom.ct, phantom.airway


def markdown(rows: list[dict], means: dict[str, dict]) -> str:
    lines = ["| case | engine | DSC | TD | BD | precision | time (s) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['engine']} | failed: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['case']} | {r['engine']} | {r['dice']:.3f} | {r['td']:.3f} | {r['bd']:.3f} | "
                     f"{r['precision']:.3f} | {r['time_s']:.1f} |")
    for engine, m in means.items():
        cells = " | ".join(f"**{m[k]['mean']:.3f}** ± {m[k]['std']:.3f}" for k in KEYS)
        lines.append(f"| mean of {m['dice']['n']} | {engine} | {cells} | {m['time_s']['mean']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seeds 1004-1005 (1.0-1.5 mm) and one real tree")
    parser.add_argument("--seeds", help="comma-separated synthetic seeds among 1000-1005 (overrides --quick)")
    parser.add_argument("--real", help=f"comma-separated real trees among {', '.join(REAL_IDS)}, or 'none'")
    parser.add_argument("--real-factor", type=int, default=2, help="downsampling of the real trees per axis")
    parser.add_argument("--models", default="", help="comma-separated extra model ids to evaluate")
    parser.add_argument("--engines", help="restrict to these engine labels (comma-separated)")
    parser.add_argument("--json", help="write per-case rows and means here")
    parser.add_argument("--cache", type=Path, help="keep generated cases here and reuse them")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(QUICK_SEEDS if args.quick else SYNTHETIC)
    real = REAL_IDS[1:2] if args.quick else REAL_IDS
    if args.real:
        real = () if args.real == "none" else tuple(args.real.split(","))
    if real and not REAL_TREES.is_dir():
        print(f"real ATM'22 trees not found at {REAL_TREES}; skipped")
        real = ()

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="heldout-") as scratch:
        engines, notes = available_engines([m for m in args.models.split(",") if m], Path(scratch))
        if args.engines:
            engines = {k: v for k, v in engines.items() if k in args.engines.split(",")}
        for note in notes:
            print(note)
        cases = [(f"seed{s}", lambda s=s: synthetic_case(s)) for s in seeds]
        for c in real:  # the seed follows the tree, not its place in the list
            seed = 2000 + REAL_IDS.index(c)
            make = lambda c=c, s=seed: real_tree_case(c, args.real_factor, s)  # noqa: E731
            cases.append((f"{c}_x{args.real_factor}_s{seed}", make))
        for key, make in cases:
            start = time.perf_counter()
            name, ct, airway = cached(make, key, args.cache)
            print(f"{name}: ready in {time.perf_counter() - start:.0f} s, grid {ct.size_ijk}", flush=True)
            for engine, home in engines.items():
                try:
                    row = evaluate(ct, airway, engine, home)
                except Exception as error:  # one failing engine must not hide the others' figures
                    row = {"error": f"{type(error).__name__}: {error}"}
                rows.append({"case": name, "engine": engine, **row})
                print(json.dumps(rows[-1]), flush=True)
            del ct, airway
    means = {e: aggregate([r for r in rows if r["engine"] == e and "error" not in r]) for e in engines}
    means = {e: m for e, m in means.items() if m}
    print(markdown(rows, means))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "means": means, "notes": notes,
                                               "real_factor": args.real_factor}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
