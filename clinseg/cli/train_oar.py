"""``clinseg train oar``: the two-stage head & neck OAR model (document 001) on a labelled folder.

``--data`` takes a ``clinseg phantom headneck`` folder (or a folder of them), a PDDCA folder, RTSTRUCT case
folders, or the DeepMind TCIA mask folders (a phantom CT is built around each annotator's masks). Prepared
cases are cached (``--cache``, default ``OUT/cache``) so a second run on the same data starts at once.
Writes ``OUT/model.safetensors`` (stage 1 + stage-2 models as one ``OARCascade``) and ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from ..errors import InputError
from .reporting import Reporter, add_common_arguments


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def register(tasks) -> None:
    p = tasks.add_parser("oar", help="the two-stage head & neck organ-at-risk U-Net (document 001)")
    p.add_argument("--data", required=True, help="phantom, PDDCA, RTSTRUCT or DeepMind TCIA mask folder")
    p.add_argument("--val-data", help="validation cases (default: the last --val-cases of --data)")
    p.add_argument("--val-cases", type=int, default=2)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--annotators", type=_names, default=("oncologist",), help="TCIA masks: whose contours")
    p.add_argument("--splits", type=_names, help="TCIA masks: which split folders (default: all)")
    p.add_argument("--val-splits", type=_names, help="TCIA masks for --val-data: which split folders")
    p.add_argument("--limit", type=int, help="use at most this many training cases")
    p.add_argument("--width", type=int, default=8, help="stage-1 base width (the document's: 24)")
    p.add_argument("--stage2-width", type=int, default=8)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--stage2-epochs", type=int, default=0, help="per small organ, on crops centred on the organ "
                   "itself; 0: stage 1 only (the shipped stage 2 is anchored: clinseg train oar-stage2)")
    p.add_argument("--iters-per-epoch", type=int, default=25)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (the document's 1e-3), /10 at 80 %%")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dice-weight", type=float, default=0.0, help="add W x multi-class soft Dice to stage 1's "
                   "focal loss (default 0: the document's loss)")
    p.add_argument("--loss", choices=["focal", "ce"], default="focal", help="stage 1's voxel loss (the document's: "
                   "focal)")
    p.add_argument("--norm", choices=["none", "batch"], default="none", help="normalisation after each convolution "
                   "(the document's table: none)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("I", "J", "K"), default=(2.0, 2.0, 3.0),
                   help="stage-1 working spacing in mm")
    p.add_argument("--patch", type=int, nargs=3, metavar=("D", "H", "W"), default=(32, 64, 64),
                   help="stage-1 training cuboid in voxels (multiples of 8)")
    p.add_argument("--stage2-organs", type=_names, help="comma-separated organs given a stage-2 model (default: "
                   "the optic nerves and chiasm, lenses, cochleae and lacrimal glands)")
    p.add_argument("--fg-fraction", type=float, default=0.8, help="share of stage-1 cuboids centred on an organ")
    p.add_argument("--validate-every", type=int, default=0, help="stage-1 epochs between validation passes "
                   "(0: at the end only)")
    p.add_argument("--init", type=Path, help="start stage 1 from this cascade .safetensors (fine-tune)")
    p.add_argument("--cache", type=Path, help="prepared-case folder (default: OUT/cache)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--max-minutes", type=float, help="stage-1 time budget")
    p.add_argument("--stage2-max-minutes", type=float, help="time budget per stage-2 organ")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=["auto", "float32"], default="auto")
    add_common_arguments(p)
    p.set_defaults(func=run)
    s = tasks.add_parser("oar-stage2", help="stage-2 small-organ models on crops anchored on organs a trained stage "
                         "1 finds (eyes, brainstem); writes the cascade with that stage 1 (after clinseg train oar)")
    add_stage2_arguments(s)
    s.set_defaults(func=run_stage2)


def _prepared(root: str, cache: Path, config, annotators, splits, seed: int, limit: int | None, log) -> list:
    from ..train.oar import load_prepared, prepare_case, respace_prepared, save_prepared
    from ..train.oar_data import iter_cases

    cache.mkdir(parents=True, exist_ok=True)
    index_path = cache / "index.json"
    key = json.dumps({"root": str(Path(root).resolve()), "annotators": annotators, "splits": splits, "seed": seed,
                      "spacing": config.spacing, "stage2": [config.stage2_spacing, config.stage2_patch,
                                                            config.stage2_jitter_mm]}, sort_keys=True)
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    if key in index and all((cache / f).is_file() for f in index[key]):
        files = index[key][:limit] if limit else index[key]
        return [load_prepared(cache / f) for f in files]
    for other, files in index.items():  # the same cases cached at another stage-1 spacing: resample them
        fields = json.loads(other)
        if {**fields, "spacing": list(config.spacing)} == json.loads(key) and all((cache / f).is_file() for f in files):
            log(f"stage-1 arrays resampled from the {fields['spacing']} mm cache")
            return [respace_prepared(load_prepared(cache / f), fields["spacing"], config.spacing, seed)
                    for f in (files[:limit] if limit else files)]
    out, files = [], []
    for case in iter_cases(root, tuple(annotators), splits, seed):
        started = time.perf_counter()
        prepared = prepare_case(case, config)
        name = f"{len(index)}_{len(files):03d}_{case.name}.npz"
        save_prepared(prepared, cache / name)
        files.append(name)
        out.append(prepared)
        log(f"prepared {case.name} ({time.perf_counter() - started:.1f} s)")
        if limit and len(out) >= limit:
            break
    if not limit:
        index[key] = files
        index_path.write_text(json.dumps(index, indent=1))
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from ..engine.devices import select_device
    from ..terminology import HN_ORGANS
    from ..train.loop import export_safetensors
    from ..train.oar import OarTrainConfig, run_training

    if args.epochs < 1 or args.stage2_epochs < 0:
        raise InputError("--epochs", "must be at least 1 (and --stage2-epochs at least 0)")
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    reporter = Reporter.from_args(args)
    out = Path(args.out)
    cache = args.cache or out / "cache"
    config = OarTrainConfig(width=args.width, stage2_width=args.stage2_width, batch=args.batch,
                            iters_per_epoch=args.iters_per_epoch, seed=args.seed, val_count=args.val_cases,
                            dice_weight=args.dice_weight, loss=args.loss, norm=args.norm,
                            fg_fraction=args.fg_fraction, validate_every=args.validate_every,
                            spacing=tuple(args.spacing), patch=tuple(args.patch))
    if args.stage2_organs:
        unknown = set(args.stage2_organs) - {s.name for s in HN_ORGANS}
        if unknown:
            raise InputError("--stage2-organs", f"unknown organ(s): {', '.join(sorted(unknown))}")
        config.stage2_organs = tuple(args.stage2_organs)
    started = time.perf_counter()
    cases = _prepared(args.data, cache, config, args.annotators, args.splits, args.seed, args.limit, reporter.log)
    if args.val_data:
        val = _prepared(args.val_data, cache, config, args.annotators, args.val_splits, args.seed + 1000, None,
                        reporter.log)
        train_cases, val = cases, val[: args.val_cases]
    else:
        if len(cases) <= args.val_cases:
            raise InputError(args.data, f"{len(cases)} case(s): too few to hold out {args.val_cases}")
        train_cases, val = cases[: len(cases) - args.val_cases], cases[len(cases) - args.val_cases:]
    prep_minutes = (time.perf_counter() - started) / 60
    reporter.log(f"{len(train_cases)} training and {len(val)} validation cases ({prep_minutes:.1f} min to prepare)")
    device = select_device(args.device)
    init = None
    if args.init:
        from safetensors.torch import load_file

        init = load_file(str(args.init))
    result = run_training(train_cases, val, out, config, args.epochs, args.stage2_epochs, device, args.lr,
                          args.max_minutes, args.stage2_max_minutes, amp=args.precision == "auto", log=reporter.log,
                          init=init)
    weights = export_safetensors(result.cascade, out / "model.safetensors", {"network": "OARCascade"})
    summary = {
        "config": asdict(config), "train_cases": [c.name for c in train_cases], "val_cases": [c.name for c in val],
        "epochs": result.stage1.epochs_done, "stage1_curves": result.stage1.rows,
        "stage2": {k: {"epochs": s.epochs_done, "curves": s.rows} for k, s in result.stage2.items()},
        "val_dice_stage1": result.val_dice, "threads": torch.get_num_threads(),
        "wall_minutes": round((time.perf_counter() - started) / 60, 2), "prepare_minutes": round(prep_minutes, 2),
        "init": str(args.init) if args.init else None, "lr": args.lr, "stage2_epochs": args.stage2_epochs,
        "iters_per_epoch": args.iters_per_epoch, "dice_weight": args.dice_weight,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    reporter.result({"out": str(out), "weights": str(weights), "val_dice_stage1": result.val_dice})
    return 0


def add_stage2_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``clinseg train oar-stage2`` (and of ``python -m clinseg.train.oar_stage2``)."""
    p.add_argument("--data", required=True, help="labelled cases (any clinseg train oar layout)")
    p.add_argument("--splits", default="test", help="TCIA masks: comma-separated split folders")
    p.add_argument("--stage1-model", default="oar-unet-phantom", help="registered model whose stage 1 gives the "
                   "imperfect anchors and goes into the cascade")
    p.add_argument("--stage1-weights", type=Path, help="cascade .safetensors whose stage 1 goes into the output "
                   "(default: the stage-1 model's)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path, help="prepared cases (default OUT/cache)")
    p.add_argument("--models", help="comma-separated stage-2 model keys (lens, optic_nerve, cochlea, "
                   "lacrimal, submandibular; default: the first four, as shipped)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--iters-per-epoch", type=int, default=40)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dice-weight", type=float, default=1.0, help="CE + W x soft Dice; 0: class-weighted CE")
    p.add_argument("--jitter-mm", type=float, default=6.0)
    p.add_argument("--max-minutes", type=float, help="per model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prepare-only", action="store_true")


def run_stage2(args: argparse.Namespace) -> int:
    import sys

    from ..train.oar_stage2 import run as train_stage2

    return train_stage2(args, "clinseg " + " ".join(sys.argv[1:]))
