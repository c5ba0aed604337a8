"""LUNA16 on disk: ``subsetN/<seriesuid>.mhd`` (+ ``.raw``) and ``annotations.csv`` / ``candidates.csv``.

Coordinates in the CSV files are world millimetres of the MetaImage, i.e. ITK
physical points: the LPS frame of :class:`clinseg.volume.Volume`, so a
nodule's voxel is ``volume.physical_to_index(centre)`` with no axis flip.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_write, read_volume
from ..io.image import write_image
from ..volume import Volume, label_of

ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
CANDIDATE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "class")


@dataclass(frozen=True)
class LunaNodule:
    """One annotated nodule: centre in LPS mm and diameter in mm."""

    seriesuid: str
    centre: tuple[float, float, float]
    diameter_mm: float


@dataclass(frozen=True)
class LunaCandidate:
    """One detection candidate (``label`` 1 = nodule, 0 = not)."""

    seriesuid: str
    centre: tuple[float, float, float]
    label: int


def _rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    subject = label_of(path)
    if not path.is_file():
        raise InputError(subject, "file not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(subject, f"lacks column(s) {', '.join(missing)} (has {reader.fieldnames})")
        return list(reader)


def _float(subject: str, row: dict[str, str], key: str, line: int) -> float:
    try:
        value = float(row[key])
    except (TypeError, ValueError):
        raise InputError(subject, f"line {line}: {key} '{row.get(key)}' is not a number") from None
    if not np.isfinite(value):
        raise InputError(subject, f"line {line}: {key} is not finite")
    return value


def _points(path: str | Path, columns: tuple[str, ...]) -> list[tuple[str, tuple[float, float, float], float]]:
    """``(seriesuid, centre, value of the last column)`` of each row of a LUNA16 CSV file (line numbers in errors)."""
    path = Path(path)
    subject = label_of(path)
    out = []
    for n, row in enumerate(_rows(path, columns), start=2):
        centre = tuple(_float(subject, row, c, n) for c in ("coordX", "coordY", "coordZ"))
        out.append((row["seriesuid"].strip(), centre, _float(subject, row, columns[-1], n)))
    return out


def read_annotations(path: str | Path) -> list[LunaNodule]:
    """Read ``annotations.csv`` (seriesuid, coordX, coordY, coordZ, diameter_mm)."""
    return [LunaNodule(uid, centre, diameter) for uid, centre, diameter in _points(path, ANNOTATION_COLUMNS)]


def read_candidates(path: str | Path) -> list[LunaCandidate]:
    """Read ``candidates.csv`` (seriesuid, coordX, coordY, coordZ, class)."""
    return [LunaCandidate(uid, centre, int(label)) for uid, centre, label in _points(path, CANDIDATE_COLUMNS)]


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[tuple]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    with atomic_write(path) as tmp:
        tmp.write_text(buffer.getvalue())
    return path


def write_annotations(path: str | Path, nodules: list[LunaNodule]) -> Path:
    """Write ``annotations.csv`` atomically (coordinates with 10 significant digits, as LUNA16 does)."""
    rows = [(n.seriesuid, *(f"{c:.10g}" for c in n.centre), f"{n.diameter_mm:.10g}") for n in nodules]
    return _write_csv(Path(path), ANNOTATION_COLUMNS, rows)


def write_candidates(path: str | Path, candidates: list[LunaCandidate]) -> Path:
    rows = [(c.seriesuid, *(f"{v:.10g}" for v in c.centre), int(c.label)) for c in candidates]
    return _write_csv(Path(path), CANDIDATE_COLUMNS, rows)


class Luna16:
    """A LUNA16 root: ``subset*/`` holding ``.mhd`` scans, ``annotations.csv`` at the root or in ``CSVFILES/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(label_of(self.root), "is not a folder")
        self.scans = {p.stem: p for p in sorted(self.root.glob("subset*/*.mhd"))}
        csv_path = next((p for p in (self.root / "annotations.csv", self.root / "CSVFILES" / "annotations.csv")
                         if p.is_file()), None)
        self.annotations = read_annotations(csv_path) if csv_path else []

    @property
    def series_uids(self) -> list[str]:
        return list(self.scans)

    def subset_of(self, seriesuid: str) -> int:
        return int(self._path(seriesuid).parent.name.removeprefix("subset"))

    def _path(self, seriesuid: str) -> Path:
        if seriesuid not in self.scans:
            raise InputError(seriesuid, f"is not a scan of {label_of(self.root)}")
        return self.scans[seriesuid]

    def read_ct(self, seriesuid: str) -> Volume:
        return read_volume(self._path(seriesuid))

    def nodules(self, seriesuid: str) -> list[LunaNodule]:
        return [n for n in self.annotations if n.seriesuid == seriesuid]


def nodule_voxels(ct: Volume, nodules: list[LunaNodule]) -> np.ndarray:
    """Continuous ``(i, j, k)`` indices of nodule centres on ``ct`` (world LPS -> index, no flips)."""
    if not nodules:
        return np.zeros((0, 3))
    return ct.physical_to_index(np.array([n.centre for n in nodules]))


def nodule_sphere_mask(ct: Volume, nodules: list[LunaNodule]) -> np.ndarray:
    """Boolean ``[k, j, i]`` mask of spheres of the annotated diameters (LUNA16 gives no outlines)."""
    mask = np.zeros(ct.shape, dtype=bool)
    m = ct.direction @ np.diag(ct.spacing)
    for nodule in nodules:
        r = nodule.diameter_mm / 2
        centre = ct.physical_to_index(np.array(nodule.centre))
        half = np.ceil(r / np.array(ct.spacing)) + 1
        lo = np.maximum(np.floor(centre - half), 0).astype(int)
        hi = np.minimum(np.ceil(centre + half) + 1, ct.size_ijk).astype(int)
        if np.any(hi <= lo):
            continue
        ii, jj, kk = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        offsets = np.stack([ii, jj, kk], -1) - centre
        inside = np.linalg.norm(offsets @ m.T, axis=-1) <= r
        mask[kk[inside], jj[inside], ii[inside]] = True
    return mask


def write_luna16_case(root: str | Path, subset: int, seriesuid: str, ct: Volume) -> Path:
    """Write one scan as ``root/subset<N>/<seriesuid>.mhd`` + uncompressed ``.raw``, as LUNA16 ships them."""
    path = Path(root) / f"subset{subset}" / f"{seriesuid}.mhd"
    ct = ct.with_array(ct.array.astype(np.int16) if ct.array.dtype.kind in "iu" else ct.array)
    return write_image(ct, path, compress=False)
