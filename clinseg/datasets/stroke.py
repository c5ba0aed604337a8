"""Stroke lesion datasets on disk: ATLAS (R1.1 and v2.0), ISLES 2015 (SISS/SPES) and ISLES 2022.

Readers list cases as :class:`StrokeCaseFiles` (paths only) and load them as
:class:`StrokeCase` (volumes); writers produce each layout from volumes, e.g.
from :func:`clinseg.phantoms.brain.generate_brain`.

Layouts:

* ATLAS v2.0 (BIDS): ``.../sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz`` and
  ``..._label-L_desc-T1lesion_mask.nii.gz`` beside it. ATLAS R1.1: ``Site1/031768/t01/031768_t1w_deface_stx.nii.gz``
  with one or more ``031768_LesionSmooth*_stx.nii.gz`` (their union is the lesion).
* ISLES 2015: one folder per case holding ``VSD.Brain.XX.O.MR_<seq>.<id>/VSD.Brain.XX.O.MR_<seq>.<id>.nii``
  (SISS: T1, T2, Flair, DWI; SPES: CBF, CBV, DWI, T1c, T2, Tmax, TTP) and ``VSD.Brain.XX.O.OT.<id>`` (lesion).
* ISLES 2022: ``rawdata/sub-strokecaseXXXX/ses-0001/dwi/*_dwi.nii.gz``, ``*_adc.nii.gz``,
  ``anat/*_FLAIR.nii.gz`` and ``derivatives/sub-strokecaseXXXX/ses-0001/*_msk.nii.gz``. Files are found by
  their BIDS names anywhere under the root, so a flat folder of ``sub-..._ses-..._<kind>.nii.gz`` works too.
  FLAIR is on its own grid; DWI, ADC and the mask share one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import read_volume, write_volume
from ..volume import Volume, label_of

LAYOUTS = ("atlas", "isles2015", "isles2022")
_ISLES22_KINDS = {"dwi": "DWI", "adc": "ADC", "flair": "FLAIR", "msk": "mask"}
_ISLES15_SEQ = {"t1": "T1", "t2": "T2", "flair": "FLAIR", "dwi": "DWI", "t1c": "T1c", "cbf": "CBF", "cbv": "CBV",
                "tmax": "Tmax", "ttp": "TTP"}
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


@dataclass
class StrokeCaseFiles:
    """Where one case's images and lesion mask(s) are; nothing is read yet."""

    case_id: str
    dataset: str
    images: dict[str, Path]
    lesions: list[Path] = field(default_factory=list)

    def load(self) -> StrokeCase:
        images = {name: read_volume(path) for name, path in self.images.items()}
        lesion = None
        for path in self.lesions:
            mask = read_volume(path)
            lesion = mask if lesion is None else _union(lesion, mask, path)
        if lesion is not None:
            lesion = lesion.with_array((lesion.array > 0).astype(np.uint8), name="lesion")
        return StrokeCase(self.case_id, self.dataset, images, lesion)


@dataclass
class StrokeCase:
    """One case: images by sequence name (``T1``, ``FLAIR``, ``DWI``, ``ADC``...) and the binary lesion mask."""

    case_id: str
    dataset: str
    images: dict[str, Volume]
    lesion: Volume | None

    @property
    def lesion_volume_ml(self) -> float:
        if self.lesion is None:
            return 0.0
        return float(np.count_nonzero(self.lesion.array) * np.prod(self.lesion.spacing) / 1000.0)


def _union(a: Volume, b: Volume, path: Path) -> Volume:
    if not a.same_grid(b):
        raise InputError(label_of(path), "lesion masks of one case are on different grids")
    return a.with_array(((a.array > 0) | (b.array > 0)).astype(np.uint8))


def _niftis(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and _NIFTI.search(p.name))


def _stem(path: Path) -> str:
    return _NIFTI.sub("", path.name)


# --- readers ------------------------------------------------------------------------------------------------
def list_atlas(root: str | Path) -> list[StrokeCaseFiles]:
    """ATLAS cases under ``root``: v2.0 BIDS ``sub-*`` folders and/or R1.1 ``<site>/<id>/t01`` folders."""
    root = _folder(root)
    cases: dict[str, StrokeCaseFiles] = {}
    for path in _niftis(root):
        name = _stem(path)
        if name.endswith("_T1w") and name.startswith("sub-"):
            case_id = name.split("_")[0] + ("_" + name.split("_")[1] if "_ses-" in name else "")
            masks = sorted(path.parent.glob(name[: -len("_T1w")] + "*label-L*mask.nii*"))
            if not masks:  # some releases drop the space entity from the mask name
                masks = sorted(path.parent.glob(name.split("_")[0] + "*label-L*mask.nii*"))
            cases[case_id] = StrokeCaseFiles(case_id, "atlas", {"T1": path}, masks)
        elif name.lower().endswith("_t1w_deface_stx"):
            case_id = name[: -len("_t1w_deface_stx")]
            masks = sorted(path.parent.glob(f"{case_id}_LesionSmooth*_stx.nii*"))
            cases[case_id] = StrokeCaseFiles(case_id, "atlas", {"T1": path}, masks)
    return [cases[k] for k in sorted(cases)]


def list_isles2015(root: str | Path) -> list[StrokeCaseFiles]:
    """ISLES 2015 SISS/SPES cases: each folder holding ``*.MR_<seq>.*`` images and an ``*.OT.*`` lesion."""
    root = _folder(root)
    cases: dict[Path, StrokeCaseFiles] = {}
    for path in _niftis(root) + sorted(root.rglob("*.mha")):
        match = re.search(r"\.(MR_([A-Za-z0-9]+)|OT)\.\d+", path.name)
        if not match:
            continue
        # Each image sits in a folder named like itself; the case folder is the one above.
        case_dir = path.parent.parent if path.parent.name.startswith("VSD.") else path.parent
        case = cases.setdefault(case_dir, StrokeCaseFiles(case_dir.name, "isles2015", {}, []))
        if match.group(1) == "OT":
            case.lesions.append(path)
        else:
            seq = _ISLES15_SEQ.get(match.group(2).lower(), match.group(2))
            case.images[seq] = path
    return [cases[k] for k in sorted(cases, key=lambda p: _natural(p.name))]


def list_isles2022(root: str | Path) -> list[StrokeCaseFiles]:
    """ISLES 2022 cases: files named ``sub-<case>_ses-<n>_<dwi|adc|flair|msk>.nii[.gz]`` anywhere under ``root``."""
    root = _folder(root)
    cases: dict[str, StrokeCaseFiles] = {}
    pattern = re.compile(r"^(sub-[A-Za-z0-9]+)_(ses-[A-Za-z0-9]+)_([A-Za-z0-9]+)$")
    for path in _niftis(root):
        match = pattern.match(_stem(path))
        if not match or match.group(3).lower() not in _ISLES22_KINDS:
            continue
        case_id = f"{match.group(1)}_{match.group(2)}"
        case = cases.setdefault(case_id, StrokeCaseFiles(case_id, "isles2022", {}, []))
        kind = _ISLES22_KINDS[match.group(3).lower()]
        if kind == "mask":
            case.lesions = [path]
        else:
            case.images[kind] = path
    return [cases[k] for k in sorted(cases)]


def list_stroke_cases(root: str | Path, layout: str = "auto") -> list[StrokeCaseFiles]:
    """Cases of one layout (``atlas``, ``isles2015``, ``isles2022``), or of whichever layout finds some."""
    readers = {"atlas": list_atlas, "isles2015": list_isles2015, "isles2022": list_isles2022}
    if layout != "auto":
        if layout not in readers:
            raise InputError("layout", f"unknown stroke dataset layout '{layout}' (use {', '.join(LAYOUTS)} or auto)")
        return readers[layout](root)
    for reader in (list_isles2022, list_atlas, list_isles2015):
        found = reader(root)
        if found:
            return found
    raise InputError(label_of(Path(root)), "holds no ATLAS, ISLES 2015 or ISLES 2022 case")


def _folder(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise InputError(label_of(root), "is not a folder")
    return root


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


# --- writers ------------------------------------------------------------------------------------------------
def _mask(volume: Volume) -> Volume:
    return volume.with_array((volume.array > 0).astype(np.uint8))


def write_atlas_case(
    root: str | Path, subject: str, t1: Volume, lesion: Volume, session: str = "ses-1",
    space: str = "MNI152NLin2009aSym", site: str | None = None,
) -> StrokeCaseFiles:
    """Write one ATLAS v2.0 case (``subject`` like ``sub-r001s001``) under ``root[/site]``."""
    if not subject.startswith("sub-"):
        raise InputError("subject", f"ATLAS subject IDs start with 'sub-', got '{subject}'")
    folder = Path(root) / (site or "") / subject / session / "anat"
    stem = f"{subject}_{session}_space-{space}"
    t1_path = write_volume(t1, folder / f"{stem}_T1w.nii.gz")
    mask_path = write_volume(_mask(lesion), folder / f"{stem}_label-L_desc-T1lesion_mask.nii.gz")
    return StrokeCaseFiles(f"{subject}_{session}", "atlas", {"T1": t1_path}, [mask_path])


def write_isles2015_case(
    root: str | Path, case: int, images: dict[str, Volume], lesion: Volume, first_id: int = 70000,
) -> StrokeCaseFiles:
    """Write one ISLES 2015 case folder ``root/<case>/VSD.Brain.XX.O.MR_<seq>.<id>/...nii`` plus the ``OT`` mask."""
    folder = Path(root) / str(case)
    names = {v: k for k, v in _ISLES15_SEQ.items()}
    paths: dict[str, Path] = {}
    next_id = first_id + 10 * case
    for n, (seq, volume) in enumerate(images.items()):
        tag = {"FLAIR": "Flair", "T1c": "T1c", "Tmax": "Tmax", "TTP": "TTP"}.get(seq, names.get(seq, seq).upper())
        name = f"VSD.Brain.XX.O.MR_{tag}.{next_id + n}"
        paths[seq] = write_volume(volume, folder / name / f"{name}.nii")
    name = f"VSD.Brain.XX.O.OT.{next_id + len(images)}"
    mask_path = write_volume(_mask(lesion), folder / name / f"{name}.nii")
    return StrokeCaseFiles(str(case), "isles2015", paths, [mask_path])


def write_isles2022_case(
    root: str | Path, case: int, dwi: Volume, adc: Volume, flair: Volume | None, lesion: Volume,
) -> StrokeCaseFiles:
    """Write one ISLES 2022 case: ``rawdata/sub-strokecaseXXXX/ses-0001/{dwi,anat}`` and ``derivatives/...msk``."""
    if not (dwi.same_grid(adc) and dwi.same_grid(lesion)):
        raise InputError("isles2022", "DWI, ADC and the lesion mask must share one grid")
    subject, session = f"sub-strokecase{case:04d}", "ses-0001"
    stem = f"{subject}_{session}"
    raw = Path(root) / "rawdata" / subject / session
    paths = {
        "DWI": write_volume(dwi, raw / "dwi" / f"{stem}_dwi.nii.gz"),
        "ADC": write_volume(adc, raw / "dwi" / f"{stem}_adc.nii.gz"),
    }
    if flair is not None:
        paths["FLAIR"] = write_volume(flair, raw / "anat" / f"{stem}_FLAIR.nii.gz")
    mask_path = write_volume(_mask(lesion), Path(root) / "derivatives" / subject / session / f"{stem}_msk.nii.gz")
    return StrokeCaseFiles(stem, "isles2022", paths, [mask_path])
