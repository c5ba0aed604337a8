"""Reader for the TCIA/DeepMind head & neck organ-at-risk masks (``<split>/<scan>/<annotator>/<Organ>.nrrd``).

Each scan was contoured by a radiographer and, after arbitration, an oncologist; the two sets give the
inter-observer agreement, a ceiling for any model's Dice. Organ file names (``Parotid-Lt``...) map to
our organ names (``Parotid L``...) through ``clinseg.phantoms.hn_anatomy``. Masks are loaded on demand:
a scan holds ~21 full-size NRRDs per annotator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import read_volume
from ..phantoms.hn_anatomy import canonical_organ_name
from ..volume import Volume, label_of

ANNOTATORS = ("oncologist", "radiographer")


@dataclass
class HnOarCase:
    """One scan: its split, folder and, per annotator, organ name -> NRRD path."""

    name: str
    split: str
    folder: Path
    files: dict[str, dict[str, Path]] = field(default_factory=dict)

    @property
    def annotators(self) -> list[str]:
        return sorted(self.files)

    def organs(self, annotator: str) -> list[str]:
        return sorted(self.files.get(annotator, {}))

    def load(self, annotator: str, organs: list[str] | None = None) -> dict[str, Volume]:
        """Binary (uint8) masks of one annotator, keyed by our organ names; ``organs`` picks a subset."""
        if annotator not in self.files:
            raise InputError(self.name, f"no annotator {annotator!r} (have {', '.join(self.annotators)})")
        available = self.files[annotator]
        names = organs if organs is not None else sorted(available)
        out = {}
        for name in names:
            if name not in available:
                raise InputError(self.name, f"{annotator} has no {name!r} mask")
            vol = read_volume(available[name])
            vol.array = (np.asarray(vol.array) != 0).astype(np.uint8)
            vol.name = name
            out[name] = vol
        return out


def read_hn_oar(root: str | Path, splits: tuple[str, ...] | None = None) -> list[HnOarCase]:
    """Index every scan under ``root`` (``validation/``, ``test/``...); no voxels are read here."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(label_of(root), "folder not found")
    cases: list[HnOarCase] = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if splits is not None and split_dir.name not in splits:
            continue
        for scan in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            case = HnOarCase(scan.name, split_dir.name, scan)
            for ann in sorted(p for p in scan.iterdir() if p.is_dir()):
                files = {}
                for f in sorted(ann.glob("*.nrrd")):
                    organ = canonical_organ_name(f.name[: -len(".nrrd")])
                    if organ is not None:
                        files[organ] = f
                if files:
                    case.files[ann.name] = files
            if case.files:
                cases.append(case)
    if not cases:
        raise InputError(label_of(root), "no <split>/<scan>/<annotator>/*.nrrd masks found")
    return cases


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two binary masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def interobserver_dice(case: HnOarCase, organs: list[str] | None = None,
                       annotators: tuple[str, str] = ANNOTATORS) -> dict[str, float]:
    """Dice between the two annotators per organ both contoured (non-empty in at least one)."""
    a, b = annotators
    common = sorted(set(case.organs(a)) & set(case.organs(b)))
    if organs is not None:
        common = [o for o in common if o in organs]
    out = {}
    for organ in common:
        ma = case.load(a, [organ])[organ]
        mb = case.load(b, [organ])[organ]
        if not ma.same_grid(mb):
            raise InputError(case.name, f"{organ}: the two annotators' masks are on different grids")
        if ma.array.any() or mb.array.any():
            out[organ] = dice(ma.array, mb.array)
    return out


def crop_to_organs(masks: dict[str, Volume], margin_mm: float = 30.0,
                   organs: list[str] | None = None) -> dict[str, Volume]:
    """All masks cropped to the box around ``organs`` (default: all) plus ``margin_mm``; geometry kept exact."""
    keys = [k for k in masks if organs is None or k in organs]
    if not keys:
        raise InputError("masks", "nothing to crop to")
    ref = masks[keys[0]]
    union = np.zeros(ref.shape, bool)
    for k in keys:
        union |= masks[k].array != 0
    idx = np.argwhere(union)
    if len(idx) == 0:
        raise InputError("masks", "all masks are empty")
    pad = np.ceil(margin_mm / np.asarray(ref.spacing)[::-1]).astype(int)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, ref.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    origin = ref.index_to_physical(np.array(lo[::-1], float))
    return {k: Volume(np.ascontiguousarray(v.array[box]), v.spacing, tuple(origin), v.direction.copy(), v.name)
            for k, v in masks.items()}
