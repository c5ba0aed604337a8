"""The ``clinseg`` command. Each subcommand lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import ClinsegError
from ..progress import cancel_on_signals

# Modules under clinseg.cli that add subcommands, in help order.
COMMAND_MODULES = [
    "info", "models", "airway", "nodule", "oar", "stroke", "batch", "compress", "rt",
    "phantom", "gallery", "eval", "train", "demo",
]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="clinseg", description="ClinicalSeg: clinical segmentation from the command line"
    )
    parser.add_argument("--version", action="version", version=f"clinseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with cancel_on_signals() as args.cancel:  # commands pass args.cancel down to their long steps
            return int(args.func(args) or 0)
    except ClinsegError as error:
        # One line naming the input and the problem; details go nowhere else.
        print(f"clinseg: error: {error}", file=sys.stderr)
        return 2 if error.__class__.__name__ != "Cancelled" else 130
    except KeyboardInterrupt:
        print("clinseg: cancelled", file=sys.stderr)
        return 130
