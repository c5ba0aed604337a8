"""``clinseg train stroke``: a D-UNet / AGMR-Net / TSRL-Net on ATLAS, ISLES or brain-phantom folders."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .reporting import Reporter, add_common_arguments


def register(tasks) -> None:
    p = tasks.add_parser("stroke", help="document 003's 2.5-D stroke networks on ATLAS v2 / ISLES'22 / phantoms")
    p.add_argument("--data", required=True, help="dataset folder (ATLAS v2, ISLES 2015/2022 BIDS, or "
                   "'clinseg phantom brain' output in one of those layouts)")
    p.add_argument("--out", required=True, help="run folder: model.safetensors, log.csv, config.json")
    p.add_argument("--net", choices=["dunet", "agmr", "tsrl"], default="dunet")
    p.add_argument("--width", type=float, default=0.25, help="channel width multiplier (1.0: the document's)")
    p.add_argument("--sequence", choices=["DWI", "T1"], default="DWI", help="input sequence (T1: chronic)")
    p.add_argument("--spacing", type=float, default=2.0, help="in-plane spacing the network sees (mm)")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-cases", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--max-minutes", type=float, help="stop after the epoch that passes this much time")
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..train.stroke import StrokeTrainConfig, train_stroke

    if args.epochs < 1:
        raise InputError("--epochs", "must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    config = StrokeTrainConfig(args.net, args.width, args.sequence, args.spacing, args.batch, args.lr,
                               steps_per_epoch=args.steps_per_epoch, epochs=args.epochs, val_cases=args.val_cases,
                               seed=args.seed, max_minutes=args.max_minutes)
    reporter = Reporter.from_args(args)
    summary = train_stroke(args.data, args.out, config, log=reporter.log)
    reporter.result({"out": str(args.out), **summary})
    return 0
