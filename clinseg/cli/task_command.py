"""What every task command (``clinseg airway|nodule|oar|stroke``) shares: its output and engine arguments, the
refusal of a filled output folder before any work, and the atomic write + result event at the end."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..result import Result
from .reporting import Reporter, add_common_arguments


def add_task_arguments(p: argparse.ArgumentParser, engines: tuple[str, ...] = ("auto", "model", "classical"),
                       model_help: str = "registered model id (see: clinseg models list)",
                       series_help: str = "DICOM folder with several series: the one to read") -> None:
    """``-o/--out``, ``--engine``, ``--model``, ``--device``, ``--series-uid``, ``--overwrite``, ``--no-preview``
    and ``--progress``; the command adds its inputs and its own options."""
    p.add_argument("-o", "--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--engine", choices=list(engines), default="auto")
    p.add_argument("--model", dest="model_id", help=model_help)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--series-uid", help=series_help)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-preview", action="store_true", help="skip the PNG preview")
    add_common_arguments(p)


def parse_point(text: str, frame: str = "LPS", option: str = "--target") -> tuple[float, float, float]:
    """``X,Y,Z`` in mm (``frame`` LPS or RAS) as an LPS point; ``option`` names the argument in the error."""
    try:
        x, y, z = (float(v) for v in text.split(","))
    except ValueError as error:
        raise InputError(option, f"'{text}' is not X,Y,Z in mm") from error
    return (-x, -y, z) if frame == "RAS" else (x, y, z)


def output_folder(args: argparse.Namespace) -> Path:
    """``--out``, refused now (not after minutes of work) when it holds files and ``--overwrite`` is not given."""
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(str(out), "output folder exists and is not empty (choose another or pass --overwrite)")
    return out


def finish_task(args: argparse.Namespace, reporter: Reporter, task: str, result: Result, out: Path,
                render: Callable[[Result, Path], list[Path]] | None) -> int:
    """Write ``result`` atomically (with the preview unless ``--no-preview``) and send the result event.

    A cancel that arrived during the last stage stops here: no output folder at all."""
    from ..output import write_result

    args.cancel.check(task)
    files = write_result(result, out, overwrite=args.overwrite, render=None if args.no_preview else render)
    for text in result.metrics.get("warnings", []):
        reporter.log(f"clinseg: warning: {text}")
    reporter.result({"out": str(out), "files": {k: str(v) for k, v in files.items()}, "metrics": result.metrics})
    return 0
