"""A Result <-> an output folder: one writer and one reader for every task; the writer is atomic as a whole.

Files: ``<task>.seg.nrrd`` (label map with named segments), one ``<group>.mrk.json``
per curve group (``Curve.attributes["group"]``, e.g. centerlines, route), one
``<table>.csv`` per table, ``summary.json`` (task, metrics, file list) and the
figures the caller rendered. The Slicer modules read a finished background run back with ``read_result``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import read_segmentation, write_segmentation
from .io.atomic import atomic_output_dir
from .io.markups import read_curves, write_curves
from .io.tables import read_table, write_table
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


OUTPUT_SUFFIXES = (".seg.nrrd", ".mrk.json", ".csv", ".png")


def _output_files(folder: Path, listed: list[str]) -> list[Path]:
    """The files ``summary.json`` lists plus any other output file in the folder (roles may collide in the
    summary, e.g. a ``route`` curve group and a ``route`` table), in a stable order."""
    names = {name for name in listed if name.endswith(OUTPUT_SUFFIXES)}
    names |= {p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(OUTPUT_SUFFIXES)}
    return [folder / name for name in sorted(names)]


def read_result(folder: str | Path) -> Result:
    """The ``Result`` back from a folder written by ``write_result``.

    Curves keep their group (the ``.mrk.json`` file stem) in ``attributes["group"]``; tables get numeric
    columns back; ``Result.files`` maps each file's stem and kind (``route.mrk.json`` -> ``"route.mrk"``) to its path.
    """
    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise InputError(folder.name or str(folder), "has no summary.json: not a clinseg output folder")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        listed = [str(name) for name in dict(summary["files"]).values()]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(summary_path.name, f"is not a readable output summary ({error})") from None
    result = Result(str(summary.get("task", "")), metrics=dict(summary.get("metrics", {})))
    for path in _output_files(folder, listed):
        name = path.name
        if not path.is_file():
            raise InputError(name, f"listed in {summary_path.name} but missing from {folder.name}")
        if name.endswith(".seg.nrrd"):
            result.labelmap, result.segments = read_segmentation(path)
        elif name.endswith(".mrk.json"):
            for curve in read_curves(path):
                curve.attributes.setdefault("group", name.removesuffix(".mrk.json"))
                result.curves.append(curve)
        elif name.endswith(".csv"):
            result.tables.append(read_table(path, name=name.removesuffix(".csv"), typed=True))
        else:
            result.figures.append(path)
        result.files[name.removesuffix(".json").removesuffix(".nrrd").removesuffix(".csv")] = path
    return result
