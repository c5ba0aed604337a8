"""``clinseg train nodule``: the nodule false-positive reducer (document 004's decoupled FPR head).

``--layout phantom``: generated chest phantoms (``--seeds``) or ``clinseg phantom chest`` plain folders
(``--data``); ``luna16``: ``subset*/*.mhd`` + ``annotations.csv``; ``lidc``: LIDC-IDRI case folders (DICOM +
reader XML), positives outlined by >= ``--consensus`` readers. Writes ``OUT/model.safetensors`` (checkpointed),
``OUT/log.csv``, ``OUT/record.json``, the model folder ``OUT/model/`` and the pack ``OUT/<id>.zip`` for
``clinseg models import``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .reporting import Reporter, add_common_arguments


def register(tasks) -> None:
    from ..train.nodule_data import LAYOUTS

    p = tasks.add_parser("nodule", help="the nodule false-positive reducer (or NoduleNet) on phantoms, LUNA16 or "
                                        "LIDC-IDRI")
    p.add_argument("--network", choices=("fpr", "nodulenet"), default="fpr",
                   help="fpr: the reducer that scores the engine's blob candidates (default); nodulenet: document "
                        "004's whole network (RPN, FPR head, mask head) on 1 mm crops")
    p.add_argument("--data", help="dataset folder in --layout (phantom: optional, --seeds generates them)")
    p.add_argument("--layout", choices=LAYOUTS, default="phantom")
    p.add_argument("--out", required=True, help="run folder: model.safetensors, log.csv, record.json, model/, pack")
    p.add_argument("--seeds", help="phantom layout without --data: training seeds, e.g. 100-139 (below 200)")
    p.add_argument("--val-seeds", help="phantom layout without --data: validation seeds, e.g. 140-149")
    p.add_argument("--nodules-per-phantom", type=int, default=8,
                   help="generated training phantoms: nodules in each (validation phantoms keep 8)")
    p.add_argument("--spacing", help="generated phantoms (training and validation): grid I,J,K in mm over the "
                   "same field of view, e.g. 0.8,0.8,1.25 (default: the small preset's 1.4,1.4,1.4)")
    p.add_argument("--val-cases", type=int, default=0, help="folders: hold out the last N cases for validation")
    p.add_argument("--consensus", type=int, choices=[3, 4], default=3,
                   help="lidc: readers who must outline a nodule for it to be positive (fewer: ignored)")
    p.add_argument("--minutes", type=float, default=30.0, help="training wall time")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (before --minutes)")
    p.add_argument("--log-every", type=int, default=200, help="steps between log rows and checkpoints")
    p.add_argument("--batch", type=int, help="samples per step (fpr: 64) or crops per step (nodulenet: 2)")
    p.add_argument("--width", type=float, default=0.25, help="nodulenet: channel width (1 = the document's 17.3 M)")
    p.add_argument("--crop", type=int, default=96, help="nodulenet: training crop side in mm (multiple of 16)")
    p.add_argument("--device", default="auto", help="nodulenet: auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--workers", type=int, default=1, help="nodulenet: processes preparing the cases")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", help="start from these weights: an installed model id or a .safetensors file")
    p.add_argument("--hard-negatives", type=float, default=0.0,
                   help="fpr: share (0-1) of each batch's negatives drawn by their last loss instead of uniformly; "
                        "nodulenet: share of crops around the starting network's false positives (give --init)")
    p.add_argument("--cosine", action="store_true", help="learning rate decays along a half cosine")
    p.add_argument("--model-id", help="id of the trained model's card (default: nodule-fpr-<layout>-trained)")
    p.add_argument("--cache", type=Path, help="folder caching the samples (default: OUT/cache)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..train.nodule_fpr import NoduleTrainConfig, phantom_spacing, run_nodule_training, seed_range

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    if args.network == "nodulenet":
        return _run_nodulenet(args)
    args.batch = 64 if args.batch is None else args.batch
    if args.val_cases < 0 or args.batch < 2 or args.log_every < 1 or (args.max_steps or 1) < 1:
        raise InputError("arguments", "--val-cases must be >= 0, --batch >= 2, --log-every and --max-steps >= 1")
    if not 1 <= args.nodules_per_phantom <= 40:
        raise InputError("--nodules-per-phantom", f"must be between 1 and 40, got {args.nodules_per_phantom}")
    if not 0.0 <= args.hard_negatives <= 1.0:
        raise InputError("--hard-negatives", f"must be between 0 and 1, got {args.hard_negatives}")
    if args.spacing and (args.data is not None or args.layout != "phantom"):
        raise InputError("--spacing", "applies to generated phantom seeds only (a folder's scans keep their grid)")
    config = NoduleTrainConfig(
        layout=args.layout, seeds=seed_range(args.seeds) if args.seeds and args.data is None else [],
        val_seeds=seed_range(args.val_seeds) if args.val_seeds and args.data is None else [],
        val_cases=args.val_cases, consensus=args.consensus, minutes=args.minutes, max_steps=args.max_steps,
        batch=args.batch, lr=args.lr, seed=args.seed, every=args.log_every, init=args.init,
        hard_share=args.hard_negatives, cosine=args.cosine, nodules_per_phantom=args.nodules_per_phantom,
        spacing=phantom_spacing(args.spacing) if args.spacing else None)
    reporter = Reporter.from_args(args)
    summary = run_nodule_training(args.data, args.out, config, args.model_id or f"nodule-fpr-{args.layout}-trained",
                                  cache=args.cache or Path(args.out) / "cache", log=reporter.log)
    reporter.result({"out": str(args.out), **summary})
    return 0


def _run_nodulenet(args: argparse.Namespace) -> int:
    """``--network nodulenet`` (``run`` has set the threads)."""
    from ..engine.devices import select_device
    from ..train.nodule_fpr import seed_range
    from ..train.nodulenet import NoduleNetConfig
    from ..train.nodulenet_run import run_nodulenet_training

    batch = 2 if args.batch is None else args.batch
    if args.crop < 32 or args.crop % 16 or batch < 1 or not 0.05 <= args.width <= 2.0:
        raise InputError("arguments", "--crop must be a multiple of 16 of at least 32, --batch >= 1 and --width "
                                      "between 0.05 and 2")
    if args.val_cases < 0 or args.log_every < 1 or (args.max_steps or 1) < 1 or args.workers < 1:
        raise InputError("arguments", "--val-cases must be >= 0, --log-every, --max-steps and --workers >= 1")
    if args.spacing:
        raise InputError("--network nodulenet", "takes no --spacing (the network reads 1 mm crops)")
    if not 0.0 <= args.hard_negatives < 1.0:
        raise InputError("--hard-negatives", f"{args.hard_negatives:g} is not a share in [0, 1)")
    seeds = seed_range(args.seeds) if args.seeds and args.data is None else []
    val_seeds = seed_range(args.val_seeds) if args.val_seeds and args.data is None else []
    if args.data is None and (args.layout != "phantom" or not seeds):
        raise InputError("--data", f"a {args.layout} folder is needed (only the phantom layout generates seeds)")
    if max(seeds + val_seeds, default=0) >= 200:
        raise InputError("--seeds", "seeds 200 and above are the held-out benchmark; train below 200")
    config = NoduleNetConfig(width=args.width, crop=args.crop, batch=batch, lr=args.lr, minutes=args.minutes,
                             max_steps=args.max_steps, every=args.log_every, seed=args.seed,
                             cosine=args.cosine, hard_share=args.hard_negatives)
    reporter = Reporter.from_args(args)
    summary = run_nodulenet_training(
        args.data, args.out, config, args.model_id or f"nodulenet-{args.layout}-trained", args.layout, seeds,
        val_seeds, args.val_cases, args.consensus, args.nodules_per_phantom, args.workers,
        str(select_device(args.device)), args.init, reporter.log)
    reporter.result({"out": str(args.out), **summary})
    return 0
