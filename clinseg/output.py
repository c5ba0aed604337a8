"""Write a Result to an output folder: one writer for every task, atomic as a whole.

Files: ``<task>.seg.nrrd`` (label map with named segments), one ``<group>.mrk.json``
per curve group (``Curve.attributes["group"]``, e.g. centerlines, route), one
``<table>.csv`` per table, ``summary.json`` (metrics, timings, file list) and the
figures the caller rendered.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import write_segmentation
from .io.atomic import atomic_output_dir
from .io.markups import write_curves
from .io.tables import write_table
from .result import Result


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_result(
    result: Result,
    out_dir: str | Path,
    overwrite: bool = False,
    render: Callable[[Result, Path], list[Path]] | None = None,
) -> dict[str, Path]:
    """Write everything into ``out_dir``; refuses a non-empty folder unless ``overwrite``.

    Returns the written paths keyed by file name.
    """
    out_dir = Path(out_dir)
    try:
        with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
            files: dict[str, Path] = {}
            if result.labelmap is not None:
                name = f"{result.task}.seg.nrrd"
                write_segmentation(tmp / name, result.labelmap, result.segments)
                files[name] = out_dir / name
            groups: dict[str, list] = {}
            for curve in result.curves:
                groups.setdefault(curve.attributes.get("group", "curves"), []).append(curve)
            for group, curves in groups.items():
                write_curves(tmp / f"{group}.mrk.json", curves)
                files[f"{group}.mrk.json"] = out_dir / f"{group}.mrk.json"
            for table in result.tables:
                write_table(tmp / f"{table.name}.csv", table)
                files[f"{table.name}.csv"] = out_dir / f"{table.name}.csv"
            for figure in render(result, tmp) if render else []:
                files[Path(figure).name] = out_dir / Path(figure).name
            for figure in result.figures:
                shutil.copy(figure, tmp / Path(figure).name)
                files[Path(figure).name] = out_dir / Path(figure).name
            summary = {"task": result.task, "metrics": result.metrics, "files": {k: v.name for k, v in files.items()}}
            (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
            files["summary.json"] = out_dir / "summary.json"
    except FileExistsError as error:
        raise InputError(str(out_dir), "output folder exists and is not empty (choose another or pass --overwrite)") \
            from error
    result.files = files
    return files
