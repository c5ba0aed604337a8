"""``clinseg gallery``: PNG pictures of any phantom or dataset folder, or of one image with label files.

For each case: axial, coronal and sagittal slices with label outlines (through ``--point``, else through the
centroid of the smallest label, i.e. the lesion, tumour or nodule), and a 3-D view of every tree-like label
(airway, vessels; the branch centrelines of ``branches.json`` when present). Folders are recognised as:
nnU-Net/ATM'22 (``imagesTr/``), LUNA16 (``subset*/*.mhd``), PDDCA (``*/img.nrrd``), DICOM CT + RTSTRUCT,
ATLAS / ISLES 2015 / ISLES 2022, a plain phantom folder (``ct.nii.gz`` or ``<contrast>.nii.gz`` with label files
beside it) or a DICOM series.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..errors import InputError
from ..volume import Volume, label_of
from .reporting import Reporter, add_common_arguments

IMAGE_NAMES = ("ct", "img", "image", "flair", "dwi", "t1", "t1w", "t2", "adc")
TREE_WORDS = ("airway", "vessel", "tree")
LUNG_WINDOW = (-1350.0, 150.0)
SOFT_TISSUE_WINDOW = (-160.0, 240.0)
MAX_SEGMENT_OVERLAYS = 6  # more segments than this are outlined together


@dataclass
class GalleryCase:
    """What one case's pictures show: an image, label overlays on its grid and trees for 3-D views."""

    name: str
    image: Volume
    overlays: dict[str, Volume] = field(default_factory=dict)
    trees: dict[str, object] = field(default_factory=dict)  # name -> label Volume or list of branches
    point_lps: np.ndarray | None = None


def parse_triple(text: str) -> tuple[float, float, float]:
    """``argparse`` type for an ``x,y,z`` option (a point, a spacing, a grid size); shared by the CLI commands."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got '{text}'") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got '{text}'")
    return values


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two comma-separated numbers, got '{text}'") from None
    if not hi > lo:
        raise argparse.ArgumentTypeError(f"window needs low < high, got '{text}'")
    return lo, hi


def register(subparsers) -> None:
    p = subparsers.add_parser("gallery", help="render PNG slices and 3-D tree views of a phantom/dataset folder")
    p.add_argument("input", help="a phantom or dataset folder, a DICOM series folder, or an image file")
    p.add_argument("--labels", nargs="+", default=[], metavar="FILE", help="label files to outline on an image file")
    p.add_argument("--out", required=True, help="output folder for the PNG files")
    p.add_argument("--point", type=parse_triple, default=None, help="LPS point (mm) the slices pass through")
    p.add_argument("--window", type=_pair, default=None,
                   help="display window low,high, e.g. --window=-160,240 (default: by image)")
    p.add_argument("--tree", nargs="*", default=None, metavar="NAME",
                   help="labels to show in 3-D (default: those named airway/vessel/tree)")
    p.add_argument("--max-cases", type=int, default=4, help="at most this many cases of a dataset folder")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    add_common_arguments(p)
    p.set_defaults(func=run)


# --- reading cases ------------------------------------------------------------------------------------------------
def _stem(path: Path) -> str:
    from ..io import full_suffix

    suffix = full_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _is_label(volume: Volume) -> bool:
    arr = np.asarray(volume.array)
    return arr.dtype.kind in "biu" and arr.size > 0 and int(arr.min()) >= 0 and int(arr.max()) <= 255


def _on_grid(label: Volume, image: Volume) -> Volume:
    """``label`` on ``image``'s grid (nearest neighbour when the grids differ)."""
    if label.same_grid(image):
        return label
    from ..preprocess import resample_to

    return resample_to(label, image, order=0)


def _branches(path: Path) -> list:
    import json

    data = json.loads(path.read_text())
    rows = data.get("branches", data) if isinstance(data, dict) else data
    return [SimpleNamespace(points_lps=np.asarray(b["points_lps"], float), generation=int(b.get("generation", 0)),
                            radius_mm=float(b.get("radius_mm", 1.0))) for b in rows if len(b.get("points_lps", []))]


def _add_trees(case: GalleryCase, folder: Path | None = None) -> GalleryCase:
    for name, vol in case.overlays.items():
        if any(w in name.lower() for w in TREE_WORDS):
            case.trees[name] = vol
    if folder is not None and (folder / "branches.json").is_file():
        branches = _branches(folder / "branches.json")
        if branches:
            for name in [n for n in case.trees if "airway" in n.lower()]:
                del case.trees[name]
            case.trees["airway"] = branches
    return case


def _segment_overlays(path: Path, image: Volume) -> dict[str, Volume]:
    from ..io import read_segmentation

    labelmap, segments = read_segmentation(path)
    labelmap = _on_grid(labelmap, image)
    if len(segments) > MAX_SEGMENT_OVERLAYS:
        return {_stem(path): labelmap}
    return {s.name: labelmap.with_array(labelmap.array == s.label, s.name) for s in segments}


def _label_files(folder: Path, image: Volume, skip: set[Path]) -> dict[str, Volume]:
    """Every label file directly in ``folder`` (integer images, segmentations) as overlays on ``image``."""
    from ..io import image_suffix, read_volume

    overlays: dict[str, Volume] = {}
    for path in sorted(folder.iterdir()):
        if path in skip or not path.is_file() or path.name.startswith("."):
            continue
        if path.name.endswith(".seg.nrrd"):
            overlays.update(_segment_overlays(path, image))
        elif image_suffix(path) is not None and _stem(path).lower() not in IMAGE_NAMES:
            vol = read_volume(path)
            if _is_label(vol):
                overlays[_stem(path)] = _on_grid(vol, image)
    return overlays


def _plain_case(folder: Path) -> GalleryCase | None:
    from ..io import image_suffix, read_volume

    images = {_stem(p).lower(): p for p in sorted(folder.iterdir())
              if p.is_file() and image_suffix(p) is not None and not p.name.endswith(".seg.nrrd")}
    name = next((n for n in IMAGE_NAMES if n in images), None)
    if name is None:
        return None
    image = read_volume(images[name])
    case = GalleryCase(folder.name, image, _label_files(folder, image, {images[name]}))
    return _add_trees(case, folder)


def _atm22_cases(root: Path, limit: int) -> list[GalleryCase]:
    from ..datasets import read_atm22
    from ..io import read_volume

    out = []
    for c in read_atm22(root)[:limit]:
        image = read_volume(c.image_path)
        case = GalleryCase(c.id, image)
        if c.label_path is not None:
            case.overlays["airway"] = _on_grid(read_volume(c.label_path), image)
        extras = root / "extras" / c.id
        if extras.is_dir():
            case.overlays.update(_label_files(extras, image, set()))
        out.append(_add_trees(case, extras if extras.is_dir() else None))
    return out


def _luna16_cases(root: Path, limit: int) -> list[GalleryCase]:
    from ..datasets.luna16 import Luna16, nodule_sphere_mask

    data = Luna16(root)
    out = []
    for uid in data.series_uids[:limit]:
        ct = data.read_ct(uid)
        nodules = data.nodules(uid)
        case = GalleryCase(uid, ct)
        if nodules:
            case.overlays["nodules"] = ct.with_array(nodule_sphere_mask(ct, nodules).astype(np.uint8))
            case.point_lps = np.asarray(max(nodules, key=lambda n: n.diameter_mm).centre)
        extras = root / "extras" / uid
        if extras.is_dir():
            case.overlays.update(_label_files(extras, ct, set()))
        out.append(_add_trees(case, extras if extras.is_dir() else None))
    return out


def _pddca_cases(root: Path, limit: int) -> list[GalleryCase]:
    from ..datasets.pddca import list_pddca, read_pddca_case

    out = []
    for folder in list_pddca(root)[:limit]:
        c = read_pddca_case(folder)
        overlays = dict(c.structures)
        if len(overlays) > MAX_SEGMENT_OVERLAYS:
            union = np.zeros(c.image.shape, np.uint8)
            for m in overlays.values():
                union |= m.array
            overlays = {"structures": c.image.with_array(union)}
        out.append(GalleryCase(c.name, c.image, overlays))
    return out


def _rtstruct_files(root: Path) -> list:
    import pydicom

    from ..io import is_dicom_file

    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if is_dicom_file(path):
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
            if str(ds.get("Modality", "")) == "RTSTRUCT":
                found.append(path)
    return found


def _rtstruct_cases(files: list[Path], limit: int) -> list[GalleryCase]:
    import pydicom

    from ..datasets.rtstruct import read_rtstruct
    from ..io import read_volume

    out = []
    for path in files[:limit]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        try:
            ref = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
            series_uid = str(ref.RTReferencedSeriesSequence[0].SeriesInstanceUID)
        except (AttributeError, IndexError):
            raise InputError(label_of(path), "names no referenced CT series") from None
        # The CT is beside the structure set, or one folder up (<case>/CT + <case>/RTSTRUCT).
        folder = path.parent.parent if path.parent.name.upper() == "RTSTRUCT" else path.parent
        ct = read_volume(folder, series_uid)
        structures = read_rtstruct(path, ct)
        overlays = {s.name: s.mask for s in structures}
        if len(overlays) > MAX_SEGMENT_OVERLAYS:
            targets = {n: m for n, m in overlays.items() if n.upper() in ("GTV", "CTV", "PTV")}
            union = np.zeros(ct.shape, np.uint8)
            for n, m in overlays.items():
                if n not in targets:
                    union |= m.array
            overlays = {"organs": ct.with_array(union), **targets}
        out.append(GalleryCase(folder.name, ct, overlays))
    return out


def _stroke_cases(root: Path, limit: int) -> list[GalleryCase]:
    from ..datasets.stroke import list_stroke_cases

    try:
        files = list_stroke_cases(root)
    except InputError:
        return []
    out = []
    for f in files[:limit]:
        c = f.load()
        name = next((n for n in ("FLAIR", "DWI", "T1", "T2", "ADC") if n in c.images), next(iter(c.images)))
        image = c.images[name]
        overlays = {} if c.lesion is None else {"lesion": _on_grid(c.lesion, image)}
        out.append(GalleryCase(f"{c.case_id}_{name}", image, overlays))
    return out


def discover_cases(folder: str | Path, max_cases: int = 4) -> list[GalleryCase]:
    """The cases of a phantom or dataset folder (see the module docstring for the layouts recognised)."""
    from ..io import list_series, read_volume

    root = Path(folder)
    if not root.is_dir():
        raise InputError(label_of(root), "is not a folder")
    if max_cases < 1:
        raise InputError("--max-cases", f"must be at least 1, got {max_cases}")
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        return _atm22_cases(root, max_cases)
    if any(root.glob("subset*/*.mhd")):
        return _luna16_cases(root, max_cases)
    if any(root.glob("*/img.nrrd")):
        return _pddca_cases(root, max_cases)
    plain = _plain_case(root)
    if plain is not None:
        return [plain]
    stroke = _stroke_cases(root, max_cases)
    if stroke:
        return stroke
    rtstructs = _rtstruct_files(root)
    if rtstructs:
        return _rtstruct_cases(rtstructs, max_cases)
    series = list_series(root)
    if series:
        return [GalleryCase(root.name, read_volume(root, series[0].uid))]
    raise InputError(label_of(root), "holds no recognised phantom or dataset layout, image series or image")


def file_case(image_path: str | Path, label_paths: list[str | Path]) -> GalleryCase:
    """One image with label files (any grid: labels are resampled onto the image's, nearest neighbour)."""
    from ..io import read_volume

    image = read_volume(image_path)
    case = GalleryCase(_stem(Path(image_path)), image)
    for path in label_paths:
        path = Path(path)
        if path.name.endswith(".seg.nrrd"):
            case.overlays.update(_segment_overlays(path, image))
        else:
            case.overlays[_stem(path)] = _on_grid(read_volume(path), image)
    return _add_trees(case)


# --- drawing ------------------------------------------------------------------------------------------------------
def auto_window(image: Volume) -> tuple[float, float]:
    """Lung window for a chest CT, soft-tissue window for other CT, robust percentiles for MR."""
    values = np.asarray(image.array)
    sample = values.ravel()[:: max(1, values.size // 2_000_000)].astype(np.float32)
    if sample.size and float(sample.min()) <= -500:  # CT numbers
        lung = np.count_nonzero((sample > -950) & (sample < -600)) / sample.size
        return LUNG_WINDOW if lung > 0.05 else SOFT_TISSUE_WINDOW
    positive = sample[sample > 0] if np.any(sample > 0) else sample
    lo, hi = np.percentile(positive, [0.5, 99.5]) if positive.size else (0.0, 1.0)
    return float(lo), float(max(hi, lo + 1e-3))


def _focus(case: GalleryCase) -> np.ndarray | None:
    """The centroid of the smallest non-empty overlay (the lesion, tumour or nodule of most cases)."""
    if case.point_lps is not None:
        return case.point_lps
    sizes = {n: int(np.count_nonzero(v.array)) for n, v in case.overlays.items()}
    sizes = {n: s for n, s in sizes.items() if s > 0}
    if not sizes:
        return None
    vol = case.overlays[min(sizes, key=sizes.get)]
    return vol.index_to_physical(np.argwhere(np.asarray(vol.array) != 0).mean(0)[::-1])


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "case"


def render_case(case: GalleryCase, folder: str | Path, point_lps=None, window: tuple[float, float] | None = None,
                trees: list[str] | None = None) -> dict[str, Path]:
    """Write ``<name>_slices.png`` and one ``<name>_<tree>_3d.png`` per tree; returns the paths by key."""
    from ..gallery import render_orthogonal, render_tree_3d

    folder = Path(folder)
    name = _file_name(case.name)
    point = np.asarray(point_lps, float) if point_lps is not None else _focus(case)
    files = {f"{name}_slices": render_orthogonal(case.image, case.overlays, folder / f"{name}_slices.png", point,
                                                 window or auto_window(case.image), title=case.name)}
    chosen = case.trees if trees is None else {n: case.overlays[n] for n in trees if n in case.overlays}
    if trees is not None:
        missing = [n for n in trees if n not in case.overlays]
        if missing:
            raise InputError("--tree", f"no label named {', '.join(missing)} (have {', '.join(case.overlays)})")
    for tree_name, tree in chosen.items():
        if isinstance(tree, Volume) and not np.any(tree.array):
            continue
        key = f"{name}_{_file_name(tree_name)}_3d"
        files[key] = render_tree_3d(tree, folder / f"{key}.png", title=f"{case.name}: {tree_name}")
    return files


def run(args: argparse.Namespace) -> int:
    from ..io import atomic_output_dir

    reporter = Reporter.from_args(args)
    source = Path(args.input)
    if not source.exists():
        raise InputError(label_of(source), "file or folder not found")
    if source.is_dir() and not args.labels:
        cases = discover_cases(source, args.max_cases)
    else:
        cases = [file_case(source, args.labels)]
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not args.overwrite)):
        raise InputError(label_of(out), "exists and is not an empty folder (use --overwrite to replace it)")
    files: dict[str, Path] = {}
    with atomic_output_dir(out, overwrite=True) as tmp:
        for n, case in enumerate(cases, start=1):
            reporter.log(f"rendering {case.name} ({n}/{len(cases)})")
            files.update({k: out / Path(v).relative_to(tmp)
                          for k, v in render_case(case, tmp, args.point, args.window, args.tree).items()})
    reporter.result({"out": str(out), "cases": [c.name for c in cases], "files": {k: str(v) for k, v in files.items()}})
    return 0
