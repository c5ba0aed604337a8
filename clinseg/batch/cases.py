"""Finding the cases of a batch: a folder of images, a CSV of paths, or a DICOM tree (one case per series).

A ``Case`` names its input volumes (``{"ct": CaseInput(...)}``); it holds paths only, never voxels, so it is cheap
to send to a worker. Case ids become folder names: they are made file-system safe and unique.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io import image_suffix, list_series

LAYOUTS = ("auto", "folder", "csv", "dicom")
CASE_COLUMNS = ("case", "case_id")  # CSV column names accepted for the case id


@dataclass(frozen=True)
class CaseInput:
    """One input volume: an image file, or a DICOM series (``series_uid`` and its ``files``) under ``path``."""

    path: str
    series_uid: str | None = None
    files: tuple[str, ...] = ()

    def hashed_files(self) -> list[Path]:
        """The files whose bytes make up this input (a detached header's data file too), in a stable order."""
        if self.files:
            return sorted(Path(f) for f in self.files)
        path = Path(self.path)
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.is_file())
        if image_suffix(path) in (".nhdr", ".mhd"):
            stem = path.name[: -len(image_suffix(path))]
            data = [p for p in path.parent.glob(f"{stem}.*") if p != path and p.is_file()]
            return [path, *sorted(data)]
        return [path]


@dataclass(frozen=True)
class Case:
    case_id: str
    inputs: dict[str, CaseInput] = field(default_factory=dict)

    def describe(self) -> str:
        return "; ".join(f"{name}={inp.path}" + (f" [{inp.series_uid}]" if inp.series_uid else "")
                         for name, inp in self.inputs.items())


def safe_id(text: str) -> str:
    """A folder name: letters, digits, ``.``, ``_``, ``-`` only, not hidden, not empty."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"
    return cleaned[:120]


def _unique(ids: list[str]) -> list[str]:
    """Repeated ids get ``-2``, ``-3``... in order of appearance (e.g. ``a.nii`` and ``a.nii.gz``)."""
    used: set[str] = set()
    out = []
    for case_id in ids:
        candidate, n = case_id, 1
        while candidate in used:
            n += 1
            candidate = f"{case_id}-{n}"
        used.add(candidate)
        out.append(candidate)
    return out


def _image_stem(path: Path) -> str:
    suffix = image_suffix(path) or "".join(path.suffixes)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _single_input(input_names: list[str], layout: str) -> str:
    if len(input_names) != 1:
        wanted = ", ".join(input_names) or "named by sequence"
        raise InputError(layout, f"the tasks need several volumes per case ({wanted}): give a CSV with those columns")
    return input_names[0]


def cases_from_folder(folder: Path, input_names: list[str]) -> list[Case]:
    """One case per image file directly in ``folder`` (NIfTI, NRRD, MetaImage); other files are ignored."""
    name = _single_input(input_names, "folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and image_suffix(p))
    ids = _unique([safe_id(_image_stem(p)) for p in files])
    return [Case(i, {name: CaseInput(str(p))}) for i, p in zip(ids, files)]


def cases_from_csv(path: Path, input_names: list[str], optional_names: tuple[str, ...] = ()) -> list[Case]:
    """Rows of a CSV with a header: a column per input name (or ``path`` for a one-input task), optional ``case``
    (or ``case_id``) and ``series_uid``, and a column per optional input (may be empty). Relative paths are
    relative to the CSV's folder."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(path.name, f"is not a readable CSV ({error})") from None
    if not rows:
        raise InputError(path.name, "has no rows")
    columns = set(rows[0])
    mapping = {n: n for n in input_names if n in columns}
    if not mapping and "path" in columns:
        mapping = {_single_input(input_names, path.name): "path"}
    missing = [n for n in input_names if n not in mapping]
    if missing:
        raise InputError(path.name, f"needs column(s) {', '.join(missing)} (or 'path' for a one-volume task); "
                                    f"found {', '.join(sorted(columns))}")
    optional = {n: n for n in optional_names if n in columns and n not in mapping}
    if not mapping and not optional:
        raise InputError(path.name, f"needs a column for one of {', '.join(optional_names)}; "
                                    f"found {', '.join(sorted(columns))}")
    id_column = next((c for c in CASE_COLUMNS if c in columns), None)
    cases, explicit = [], []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        inputs = {}
        for name, column in [*mapping.items(), *optional.items()]:
            value = (row.get(column) or "").strip()
            if not value and name in optional:
                continue
            if not value:
                raise InputError(f"{path.name} line {number}", f"empty '{column}'")
            full = Path(value) if os.path.isabs(value) else path.parent / value
            inputs[name] = CaseInput(str(full), (row.get("series_uid") or "").strip() or None)
        if not inputs:
            raise InputError(f"{path.name} line {number}", "names no input volume")
        given = (row.get(id_column) or "").strip() if id_column else ""
        explicit.append(bool(given))
        cases.append((safe_id(given) if given else safe_id(_image_stem(Path(next(iter(inputs.values())).path))),
                      inputs))
    given_ids = [cid for (cid, _), e in zip(cases, explicit) if e]
    if len(set(given_ids)) != len(given_ids):
        raise InputError(path.name, "the same case id appears on two rows")
    ids = _unique([cid for cid, _ in cases])
    return [Case(i, inputs) for i, (_, inputs) in zip(ids, cases)]


def cases_from_dicom(root: Path, input_names: list[str]) -> list[Case]:
    """One case per DICOM image series under ``root``; the id is the series' folder path (and description and
    UID tail where that is not unique), so it stays the same on a re-run of the same tree."""
    name = _single_input(input_names, "dicom")
    found = list_series(root)
    if not found:
        raise InputError(root.name or str(root), "holds no DICOM image series")
    entries = []
    for series in found:
        parent = Path(os.path.commonpath([str(p.parent) for p in series.files]))
        rel = parent.relative_to(root).as_posix() if parent != root else (series.description or "series")
        entries.append((rel, series, parent))
    counts: dict[str, int] = {}
    for rel, _, _ in entries:
        counts[rel] = counts.get(rel, 0) + 1
    ids = []
    for rel, series, _ in entries:
        base = rel if counts[rel] == 1 else f"{rel}_{series.description}_{series.uid[-8:]}"
        ids.append(safe_id(base))
    order = sorted(range(len(entries)), key=lambda k: ids[k])
    return [Case(ids[k], {name: CaseInput(str(entries[k][2]), entries[k][1].uid,
                                          tuple(str(p) for p in entries[k][1].files))}) for k in order]


def _looks_like_dicom_tree(folder: Path) -> bool:
    from ..io import is_dicom_file

    for path in folder.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            return is_dicom_file(path) or path.suffix.lower() == ".dcm"
    return False


def discover_cases(source: str | Path, input_names: list[str], layout: str = "auto",
                   optional_names: tuple[str, ...] = ()) -> list[Case]:
    """The cases of ``source`` for tasks needing ``input_names`` (and accepting ``optional_names``, CSV only).
    ``auto``: a ``.csv`` file is a CSV, a folder with image files is a folder of images, else a folder holding
    DICOM files is a DICOM tree."""
    source = Path(source)
    if layout not in LAYOUTS:
        raise InputError("--layout", f"unknown layout '{layout}' (choose from {', '.join(LAYOUTS)})")
    if not source.exists():
        raise InputError(source.name or str(source), "not found")
    if layout == "auto":
        if source.is_file():
            layout = "csv"
        elif any(p.is_file() and image_suffix(p) for p in source.iterdir()):
            layout = "folder"
        elif _looks_like_dicom_tree(source):
            layout = "dicom"
        else:
            raise InputError(source.name, "holds no image files, no DICOM series (or give a .csv of paths)")
    if layout == "csv":
        if not source.is_file():
            raise InputError(source.name, "is not a CSV file")
        return cases_from_csv(source, input_names, optional_names)
    if not source.is_dir():
        raise InputError(source.name, "is not a folder")
    return cases_from_folder(source, input_names) if layout == "folder" else cases_from_dicom(source, input_names)
