"""``clinseg train <task>``: train a network on a dataset folder (airway: ATM'22 / nnU-Net layout)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ..errors import InputError
from .reporting import Reporter, add_common_arguments

# Other tasks' trainers, one module each under clinseg.cli (``train_<task>.py`` with ``register(tasks)``).
TASK_TRAINERS: list[str] = ["oar", "stroke", "nodule", "ctv"]


def _triple(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"'{text}' is not D,H,W (three integers)")
    return values  # type: ignore[return-value]


def _spacing(text: str) -> tuple[float, float, float]:
    """``0.8`` (isotropic) or ``0.8,0.8,1.0`` (i, j, k mm)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"'{text}' is not a spacing in mm (S or I,J,K)")
    return values  # type: ignore[return-value]


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None
    if not all(0 < v < 1 for v in values) or list(values) != sorted(values):
        raise argparse.ArgumentTypeError(f"milestones must be increasing fractions in (0, 1), got {text!r}")
    return values


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a segmentation network on a labelled dataset")
    tasks = p.add_subparsers(dest="task", required=True)
    a = tasks.add_parser("airway", help="the thesis airway 3-D U-Net (baseline, +AD, +AD+FRL) on ATM'22 data")
    a.add_argument("--data", required=True, help="dataset folder: imagesTr/<id>_0000.nii.gz + labelsTr/")
    a.add_argument("--out", required=True, help="run folder: checkpoints, log.csv, model.safetensors")
    a.add_argument("--variant", choices=["baseline", "ad", "ad_frl"], default="baseline")
    a.add_argument(
        "--frl",
        choices=["adaptive", "fixed"],
        default="adaptive",
        help="ad_frl only: means over axes (any size) or the author's learned axis sums (patch size)",
    )
    a.add_argument("--width", type=float, default=1.0, help="channel width multiplier (0.5: fast CPU variant)")
    a.add_argument("--patch", type=_triple, default=(80, 192, 304), help="cuboid D,H,W, multiples of 16")
    a.add_argument("--stride", type=_triple, help="grid stride D,H,W (default: 64,96,152 scaled to the patch)")
    a.add_argument("--epochs", type=int, default=60)
    a.add_argument("--iters-per-epoch", type=int, help="default: every grid cuboid once per epoch")
    a.add_argument("--batch", type=int, default=2)
    a.add_argument("--lr", type=float, default=3e-3, help="initial learning rate, /10 at each milestone")
    a.add_argument(
        "--milestones",
        type=_fractions,
        default=None,
        help="fractions of --epochs where the learning rate drops /10 (default: the thesis's 11/21/41 of 60)",
    )
    a.add_argument("--fg-fraction", type=float, default=1 / 3, help="share of cuboids forced onto airway voxels")
    a.add_argument("--fg-points", choices=["voxels", "centerline"], default="voxels",
                   help="forced cuboids centre on any airway voxel (default) or on the label's centreline, which "
                   "weighs every branch by its length and so draws thin peripheral branches far more often")
    a.add_argument("--skeleton-recall", type=float, default=0.0, metavar="W",
                   help="add W x skeleton recall (share of the label's centerline covered) to the loss; "
                   "default 0: the thesis's loss")
    a.add_argument("--bce", type=float, default=0.0, metavar="W",
                   help="add W x binary cross-entropy to the loss; default 0: the thesis's loss")
    a.add_argument("--init", metavar="MODEL", help="fine-tune: start from an installed model id or a "
                   ".safetensors file of the same variant and width (e.g. airway-unet-phantom; use a lower --lr)")
    a.add_argument("--no-augment", action="store_true")
    a.add_argument("--val-cases", type=int, help="held-out cases (default: the thesis's, else 10 %%)")
    a.add_argument("--val-every", type=int, default=1, help="validate every N epochs")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--spacing", type=_spacing, help="resample every case to this spacing in mm (S or I,J,K); "
                   "default: native spacing, as the thesis")
    a.add_argument("--cache", type=Path, help="folder of prepared cases, shared by runs on the same data "
                   "(default: OUT/cache)")
    a.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    a.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    a.add_argument("--threads", type=int, help="CPU threads for torch")
    a.add_argument("--max-minutes", type=float, help="stop (checkpointed) once this much time has passed")
    a.add_argument(
        "--precision",
        choices=["auto", "float32"],
        default="auto",
        help="auto: mixed precision (float16 on CUDA, bfloat16 on CPUs with native bfloat16); float32: none",
    )
    add_common_arguments(a)
    a.set_defaults(func=run_airway)
    for name in TASK_TRAINERS:
        importlib.import_module(f"{__package__}.train_{name}").register(tasks)


def run_airway(args: argparse.Namespace) -> int:
    import torch

    from ..engine.devices import select_device
    from ..train.airway import AirwayTrainConfig, run_training

    if args.epochs < 1:
        raise InputError("--epochs", "must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError("--threads", "must be at least 1")
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    config = AirwayTrainConfig(
        variant=args.variant,
        width=args.width,
        patch=args.patch,
        stride=args.stride,
        batch=args.batch,
        iters_per_epoch=args.iters_per_epoch,
        frl=args.frl,
        fg_fraction=args.fg_fraction,
        fg_points=args.fg_points,
        augment=not args.no_augment,
        val_count=args.val_cases,
        val_every=args.val_every,
        seed=args.seed,
        spacing=args.spacing,
        skeleton_recall=args.skeleton_recall,
        bce=args.bce,
    )
    reporter = Reporter.from_args(args)
    summary = run_training(
        args.data,
        args.out,
        config,
        args.epochs,
        device,
        args.resume,
        args.max_minutes,
        args.lr,
        amp=args.precision == "auto",
        **({"milestones": args.milestones} if args.milestones else {}),
        log=reporter.log,
        cache_dir=args.cache,
        init=args.init,
    )
    last = summary.rows[-1] if summary.rows else {}
    reporter.result(
        {
            "out": str(args.out),
            "weights": str(summary.weights),
            "epochs": summary.epochs_done,
            "stopped_early": summary.stopped_early,
            "last_epoch": last,
        }
    )
    return 0
