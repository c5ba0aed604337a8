"""``clinseg train ctv``: document 002's CTV network on head & neck phantoms with a tumour (CT in, CTV out)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .reporting import Reporter, add_common_arguments


def register(tasks) -> None:
    from ..train.ctv import CtvTrainConfig

    d = CtvTrainConfig()
    p = tasks.add_parser("ctv", help="document 002's CTV U-Net (residual + SE, recurrent, BCE + Dice) on H&N phantoms")
    p.add_argument("--out", required=True, help="run folder: model.safetensors, log.csv, summary.json, run.json, "
                   "checkpoints/, cache/")
    p.add_argument("--masks", type=Path, help="hn_oar_masks folder: add phantoms around its test-split masks "
                   "(default: procedural phantoms only)")
    p.add_argument("--seeds", type=int, nargs=2, metavar=("FIRST", "STOP"),
                   default=(d.train_seeds[0], d.train_seeds[-1] + 1), help="procedural phantom seeds [FIRST, STOP)")
    p.add_argument("--widths", type=int, nargs="+", default=list(d.widths), help="channels per level (5 levels)")
    p.add_argument("--passes", type=int, default=d.n_iterations, help="recurrent refinement passes")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch,
                   help="steps per epoch of the shared loop: one log row and one checkpoint each")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--patch", type=int, nargs=3, default=list(d.patch), metavar=("D", "H", "W"))
    p.add_argument("--fg-fraction", type=float, default=d.fg_fraction, help="share of cuboids holding CTV voxels")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, help="folder of prepared cases (default: OUT/cache)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--max-minutes", type=float, help="stop after this much training time (lr /10 at 80 %% of it "
                   "if that comes before 80 %% of the steps)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.pt")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=["auto", "float32"], default="auto",
                   help="auto: mixed precision (float16 on CUDA, bfloat16 on CPUs with native bfloat16); "
                        "float32: none (the shipped 0.1.0 weights)")
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..engine.devices import select_device
    from ..train.ctv import CtvTrainConfig, train_ctv

    if args.threads is not None:
        if args.threads < 1:
            raise InputError("--threads", "must be at least 1")
        torch.set_num_threads(args.threads)
    if len(args.widths) != 5:
        raise InputError("--widths", f"needs 5 widths (one per level), got {len(args.widths)}")
    if args.seeds[1] <= args.seeds[0]:
        raise InputError("--seeds", "STOP must be greater than FIRST")
    if args.masks is not None and not args.masks.is_dir():
        raise InputError("--masks", f"{args.masks} is not a folder")
    config = CtvTrainConfig(widths=tuple(args.widths), n_iterations=args.passes, patch=tuple(args.patch),
                            batch=args.batch, lr=args.lr, steps=args.steps, steps_per_epoch=args.steps_per_epoch,
                            fg_fraction=args.fg_fraction,
                            train_seeds=tuple(range(*args.seeds)), mask_split="test" if args.masks else None,
                            seed=args.seed, max_minutes=args.max_minutes, augment=not args.no_augment)
    reporter = Reporter.from_args(args)
    summary = train_ctv(args.out, config, args.masks, args.cache, log=reporter.log, device=select_device(args.device),
                        amp=args.precision == "auto", resume=args.resume)
    reporter.result({"out": str(args.out), **{k: v for k, v in summary.items() if k != "cases"}})
    return 0
