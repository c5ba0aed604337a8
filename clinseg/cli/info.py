"""``clinseg info FILE``: geometry, orientation, intensities and a modality guess of a volume."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# LPS axis letters for a positive / negative step along x, y, z.
_POSITIVE = "LPS"
_NEGATIVE = "RAI"
MAX_SAMPLES = 2_000_000


def orientation_code(direction: np.ndarray) -> tuple[str, bool]:
    """Letters naming where the i, j, k axes point (``'LPS'``, ``'RAS'``...), and whether the grid is oblique.

    The letters follow the DICOM/Slicer/nibabel reading: ``'RAS'`` means i runs
    towards the patient's right, j anterior, k superior. Oblique axes get the
    letter of their largest component.
    """
    direction = np.asarray(direction, dtype=float).reshape(3, 3)
    letters = []
    oblique = False
    for axis in direction.T:  # columns are the i, j, k unit vectors
        dominant = int(np.argmax(np.abs(axis)))
        letters.append(_POSITIVE[dominant] if axis[dominant] > 0 else _NEGATIVE[dominant])
        oblique |= bool(abs(axis[dominant]) < 0.999)
    return "".join(letters), oblique


def guess_modality(array: np.ndarray) -> tuple[str, str]:
    """``('CT' | 'MR' | 'unknown', reason)`` from intensity statistics alone (no header needed)."""
    values = np.asarray(array).ravel()
    if values.size > MAX_SAMPLES:
        values = values[:: values.size // MAX_SAMPLES + 1]
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        return "unknown", "no finite voxels"
    low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    vmin, vmax = float(values.min()), float(values.max())
    if low <= -500 and vmin >= -3100 and vmax > -200:
        return "CT", f"Hounsfield-like range: 0.5th percentile {low:g} (air near -1000), max {vmax:g}"
    if vmin >= 0 and high > 2:
        return "MR", f"non-negative arbitrary units (0..{vmax:g}) without air near -1000 HU"
    return "unknown", f"range {vmin:g}..{vmax:g} fits neither HU nor MR units (normalised or derived image?)"


def describe(path: str | Path, series_uid: str | None = None) -> dict:
    """Everything ``clinseg info`` reports about one volume, JSON-ready."""
    from ..io import read_volume  # lazy: keeps ``clinseg --help`` fast

    volume = read_volume(path, series_uid)
    array = volume.array
    code, oblique = orientation_code(volume.direction)
    modality, reason = guess_modality(array)
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    extent = [float(n * s) for n, s in zip(volume.size_ijk, volume.spacing)]
    return {
        "file": str(path),
        "size": list(volume.size_ijk),
        "spacing": [round(s, 6) for s in volume.spacing],
        "origin": [round(o, 4) for o in volume.origin],
        "direction": [[round(float(v), 6) for v in row] for row in volume.direction],
        "orientation": code,
        "oblique": oblique,
        "extent_mm": [round(e, 3) for e in extent],
        "dtype": str(array.dtype),
        "intensity": {
            "min": float(finite.min()),
            "max": float(finite.max()),
            "mean": round(float(finite.mean(dtype=np.float64)), 4),
            "std": round(float(finite.std(dtype=np.float64)), 4),
        },
        "modality_guess": modality,
        "modality_reason": reason,
    }


def _fmt(values: list) -> str:
    return " x ".join(f"{v:g}" for v in values)


def run(args: argparse.Namespace) -> int:
    info = describe(args.file, args.series)
    if args.json:
        print(json.dumps(info))
        return 0
    stats = info["intensity"]
    lines = [
        ("file", info["file"]),
        ("size (i x j x k)", _fmt(info["size"])),
        ("spacing (mm)", _fmt(info["spacing"])),
        ("extent (mm)", _fmt(info["extent_mm"])),
        ("origin (LPS mm)", ", ".join(f"{v:g}" for v in info["origin"])),
        ("orientation", info["orientation"] + (" (oblique)" if info["oblique"] else "")),
        ("direction", "; ".join(" ".join(f"{v:g}" for v in row) for row in info["direction"])),
        ("dtype", info["dtype"]),
        ("intensity", f"min {stats['min']:g}, max {stats['max']:g}, mean {stats['mean']:g}, std {stats['std']:g}"),
        ("modality (guess)", f"{info['modality_guess']} - {info['modality_reason']}"),
    ]
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="describe a volume: geometry, orientation, intensities, modality guess")
    p.add_argument("file", help="image file (.nii[.gz], .nrrd, .mha...) or DICOM folder/file")
    p.add_argument("--series", default=None, help="SeriesInstanceUID when a DICOM folder holds several series")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)
