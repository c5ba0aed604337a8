"""Labelled head & neck cases for OAR training, from any of the layouts ``clinseg train oar --data`` accepts.

* ``clinseg phantom headneck`` output: ``ct.nii.gz`` + ``organs.seg.nrrd`` in the folder or in its sub-folders;
* PDDCA (MICCAI 2015): ``<case>/img.nrrd`` + ``<case>/structures/<Name>.nrrd``;
* RTSTRUCT folders: ``<case>/CT/`` (a DICOM series) + ``<case>/RTSTRUCT/*.dcm``;
* the DeepMind TCIA masks (``<split>/<scan>/<annotator>/<Organ>.nrrd``, no CT): a phantom CT is synthesised around
  each annotator's masks (``clinseg.phantoms.headneck.generate_headneck_from_masks``).

Every case comes out as a CT (HU) and one label map whose values are ``clinseg.terminology.HN_ORGANS`` labels;
organs drawn inside others (the lens in the eye, the cord in the canal) are painted last, so they keep their label.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..phantoms.hn_anatomy import PAINT_ORDER, canonical_organ_name
from ..terminology import HN_ORGANS
from ..volume import Volume, label_of

LABEL_OF = {s.name: s.label for s in HN_ORGANS}


@dataclass
class OarCase:
    name: str
    ct: Volume  # HU
    labels: Volume  # uint8, HN_ORGANS label values


def label_map(masks: dict[str, Volume | np.ndarray], reference: Volume) -> Volume:
    """One label map from per-organ masks named as any dataset names them (unknown names are skipped)."""
    out = np.zeros(reference.shape, np.uint8)
    named = {canonical_organ_name(k): v for k, v in masks.items()}
    for organ in PAINT_ORDER:
        mask = named.get(organ)
        if mask is not None:
            out[np.asarray(getattr(mask, "array", mask)) != 0] = LABEL_OF[organ]
    return reference.with_array(out, name="organs")


def detect_layout(root: Path) -> str:
    """``phantom``, ``pddca``, ``rtstruct`` or ``hn_oar`` for a data folder."""
    if (root / "ct.nii.gz").is_file() or any(root.glob("*/ct.nii.gz")):
        return "phantom"
    if (root / "img.nrrd").is_file() or any(root.glob("*/img.nrrd")):
        return "pddca"
    if any(root.glob("*/RTSTRUCT/*.dcm")):
        return "rtstruct"
    if any(root.glob("*/*/*/*.nrrd")):
        return "hn_oar"
    raise InputError(label_of(root), "no head & neck cases found (phantom, PDDCA, RTSTRUCT or DeepMind TCIA layout)")


def _phantom_cases(root: Path) -> Iterator[OarCase]:
    from ..io import read_segmentation, read_volume

    folders = [root] if (root / "ct.nii.gz").is_file() else sorted(p.parent for p in root.glob("*/ct.nii.gz"))
    for folder in folders:
        ct = read_volume(folder / "ct.nii.gz")
        labels, segments = read_segmentation(folder / "organs.seg.nrrd")
        masks = {s.name: labels.array == s.label for s in segments}
        yield OarCase(folder.name, ct, label_map(masks, ct))


def _pddca_cases(root: Path) -> Iterator[OarCase]:
    from ..datasets.pddca import list_pddca, read_pddca_case

    for folder in [root] if (root / "img.nrrd").is_file() else list_pddca(root):
        case = read_pddca_case(folder)
        yield OarCase(case.name, case.image, label_map(dict(case.structures), case.image))


def _rtstruct_cases(root: Path) -> Iterator[OarCase]:
    from ..datasets.rtstruct import read_rtstruct
    from ..io import read_volume

    for rt in sorted(root.glob("*/RTSTRUCT/*.dcm")):
        case = rt.parent.parent
        ct = read_volume(case / "CT")
        structures = {s.name: s.mask for s in read_rtstruct(rt, ct)}
        yield OarCase(case.name, ct, label_map(structures, ct))


def _hn_oar_cases(root: Path, annotators: tuple[str, ...], splits: tuple[str, ...] | None,
                  seed: int) -> Iterator[OarCase]:
    from ..datasets.hn_oar import crop_to_organs, read_hn_oar
    from ..phantoms.headneck import generate_headneck_from_masks

    for index, case in enumerate(read_hn_oar(root, splits)):
        for annotator in annotators:
            if annotator not in case.files:
                continue
            masks = crop_to_organs(case.load(annotator), 30.0)
            ph = generate_headneck_from_masks(masks, seed + index)
            names = {s.label: s.name for s in ph.organs}
            organ_masks = {names[v]: ph.labels.array == v for v in names}
            yield OarCase(f"{case.name}_{annotator}", ph.ct, label_map(organ_masks, ph.ct))


def iter_cases(root: str | Path, annotators: tuple[str, ...] = ("oncologist",), splits: tuple[str, ...] | None = None,
               seed: int = 0) -> Iterator[OarCase]:
    """Every labelled case under ``root``, whatever its layout (``annotators``/``splits``: TCIA masks only)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(label_of(root), "folder not found")
    layout = detect_layout(root)
    if layout == "phantom":
        yield from _phantom_cases(root)
    elif layout == "pddca":
        yield from _pddca_cases(root)
    elif layout == "rtstruct":
        yield from _rtstruct_cases(root)
    else:
        yield from _hn_oar_cases(root, annotators, splits, seed)
