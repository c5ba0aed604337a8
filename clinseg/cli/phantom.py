"""``clinseg phantom chest|headneck|brain``: write a synthetic scan and its exact ground truth in a dataset layout.

Layouts (``--layout``):

* chest: ``plain`` (``ct.nii.gz``, ``airway``, ``lumen``, ``lungs``, ``vessels``, ``nodules`` ``.nii.gz``,
  ``nodules.json``, ``branches.json``), ``atm22`` (nnU-Net v2: ``imagesTr/<id>_0000.nii.gz``,
  ``labelsTr/<id>.nii.gz``, ``dataset.json``; other labels under ``extras/<id>/``) or ``luna16``
  (``subset<N>/<seriesuid>.mhd`` + ``.raw``, ``annotations.csv`` with the nodules in world millimetres,
  ``candidates.csv`` with nodules as class 1 and look-alikes as class 0; labels under ``extras/<uid>/``).
* headneck: ``plain`` (``ct.nii.gz``, ``organs.seg.nrrd``, ``gtv.nii.gz``, ``ctv.nii.gz``, ``body.nii.gz``),
  ``pddca`` (``<case>/img.nrrd`` + ``<case>/structures/<Name>.nrrd``) or ``rtstruct`` (a DICOM CT series in
  ``<case>/CT/`` and an RT Structure Set referencing it in ``<case>/RTSTRUCT/rtstruct.dcm``).
* brain: ``plain`` (``<contrast>.nii.gz``, ``labels.nii.gz``, ``lesion.nii.gz``, ``labels.json``), ``atlas``
  (ATLAS v2.0 BIDS), ``isles2015`` (SISS) or ``isles2022``.

A new (or empty) ``--out`` folder appears only once complete. In a dataset layout an existing folder gets the
new case added (each file replaced atomically, index files such as ``dataset.json`` or ``annotations.csv``
merged); files of the same case are refused unless ``--overwrite``. Every command ends with a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume, label_of
from .gallery import parse_triple
from .reporting import Reporter, add_common_arguments

CHEST_LAYOUTS = ("plain", "atm22", "luna16")
HEADNECK_LAYOUTS = ("plain", "pddca", "rtstruct")
BRAIN_LAYOUTS = ("plain", "atlas", "isles2015", "isles2022")
# Index files of a dataset that several cases share: merged, never a clash.
MERGED_FILES = ("dataset.json", "annotations.csv", "candidates.csv")
BRAIN_CONTRASTS = {"atlas": ("T1",), "isles2015": ("T1", "T2", "FLAIR", "DWI"), "isles2022": ("DWI", "ADC", "FLAIR")}
SOFT_TISSUE_WINDOW = (-160.0, 240.0)


def _kind_parser(kinds, name: str, summary: str, presets: list[str], preset: str | None,
                 preset_help: str) -> argparse.ArgumentParser:
    """One phantom kind's sub-command with the options every kind has first: ``--seed`` and ``--preset``."""
    p = kinds.add_parser(name, help=summary)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=presets, default=preset, help=preset_help)
    return p


def _add_output_arguments(p: argparse.ArgumentParser, layouts: tuple[str, ...],
                          func: Callable[[argparse.Namespace], int]) -> None:
    """The output options every kind ends with, and the function that runs the kind."""
    p.add_argument("--out", required=True, help="output folder (a dataset folder to add this case to)")
    p.add_argument("--layout", choices=layouts, default="plain")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty plain folder, or this case's files in a dataset folder")
    p.add_argument("--gallery", action="store_true", help="also write PNG views under <out>/gallery/")
    add_common_arguments(p)
    p.set_defaults(func=func)


def register(subparsers) -> None:
    p = subparsers.add_parser("phantom", help="generate synthetic phantoms with exact ground truth")
    kinds = p.add_subparsers(dest="kind", required=True)

    c = _kind_parser(kinds, "chest", "chest CT with airway tree, lungs, vessels and nodules",
                     ["small", "demo", "full"], None,
                     "grid preset: small 160x160x128 @1.4 mm, demo 256x256x224 @1 mm, full 512x512x300 @0.7x0.7x1")
    c.add_argument("--spacing", type=parse_triple, default=None, help="i,j,k spacing in mm (e.g. 0.7,0.7,1.0)")
    c.add_argument("--shape", type=parse_triple, default=None, help="i,j,k size in voxels")
    c.add_argument("--noise-hu", type=float, default=None, help="noise sigma in soft tissue (default: 15-45 by seed)")
    c.add_argument("--kernel", choices=["soft", "standard", "sharp", "lung"], default=None)
    c.add_argument("--nodules", type=int, default=None, help="number of nodules (default: 1-4 by seed)")
    c.add_argument("--no-vessels", action="store_true")
    c.add_argument("--motion", action="store_true", help="add a breathing/cardiac motion blur")
    c.add_argument("--from-airway", default=None, metavar="MASK",
                   help="build the CT around this real airway mask (it becomes the ground truth)")
    c.add_argument("--case-id", default=None,
                   help="case id (atm22, default phantom_<seed>) or series UID (luna16, default derived from the seed)")
    c.add_argument("--subset", type=int, default=0, help="LUNA16 subset folder number")
    _add_output_arguments(c, CHEST_LAYOUTS, run_chest)

    h = _kind_parser(kinds, "headneck", "head & neck CT with organs at risk, GTV and CTV", ["small", "full"], "small",
                     "small: orbits to hyoid; full: vertex to C7")
    h.add_argument("--spacing", type=parse_triple, default=(1.0, 1.0, 2.5), help="i,j,k spacing in mm (0.5-3)")
    h.add_argument("--tumour", action=argparse.BooleanOptionalAction, default=None,
                   help="add a primary tumour (GTV) and its CTV (default: yes; no for --from-masks)")
    h.add_argument("--tumour-site", choices=["oropharynx", "mandible"], default="oropharynx")
    h.add_argument("--margin-mm", type=float, default=8.0, help="GTV-to-CTV margin in mm")
    h.add_argument("--from-masks", default=None, metavar="DIR",
                   help="build the CT around real organ masks: an hn_oar scan folder (<scan>/<annotator>/*.nrrd) "
                        "or one annotator's folder; the grid and labels are the masks'")
    h.add_argument("--annotator", default="oncologist", help="annotator sub-folder of --from-masks")
    h.add_argument("--crop-margin-mm", type=float, default=None,
                   help="with --from-masks: crop to the organs plus this margin (default: the masks' full grid)")
    h.add_argument("--case-id", default=None, help="case folder name in pddca/rtstruct (default: phantom_<seed>)")
    _add_output_arguments(h, HEADNECK_LAYOUTS, run_headneck)

    b = _kind_parser(kinds, "brain", "multi-contrast brain MRI with a stroke lesion", ["small", "full"], "full",
                     "full: whole head; small: an axial slab through the basal ganglia")
    b.add_argument("--spacing", type=parse_triple, default=(1.0, 1.0, 1.0), help="i,j,k spacing in mm (0.5-8)")
    b.add_argument("--lesion", choices=["mca", "lacunar", "emboli", "none"], default="mca")
    b.add_argument("--stage", choices=["acute", "chronic"], default="acute")
    b.add_argument("--contrasts", default=None,
                   help="comma-separated subset of T1,T2,FLAIR,DWI,ADC (default: all in plain, else the layout's)")
    b.add_argument("--case", type=int, default=None,
                   help="case number in dataset layouts (ISLES case N, ATLAS sub-r001sNNN; default seed + 1)")
    _add_output_arguments(b, BRAIN_LAYOUTS, run_brain)


# --- output folder ------------------------------------------------------------------------------------------------
class _Output:
    """Stage every file of one run in a temporary sibling of ``out``, then publish it.

    A missing or empty ``out`` (or a plain layout with ``overwrite``) is replaced as a whole through
    ``atomic_output_dir``; a non-empty dataset folder receives the staged files one ``os.replace`` at a time.
    """

    def __init__(self, out: Path, dataset: bool, overwrite: bool) -> None:
        self.out = out
        if out.exists() and not out.is_dir():
            raise InputError(label_of(out), "exists and is not a folder")
        fresh = not out.exists() or not any(out.iterdir())
        if not fresh and not dataset and not overwrite:
            raise InputError(label_of(out), "exists and is not empty (use --overwrite to replace it)")
        self.merge = not fresh and dataset
        self.overwrite = overwrite
        self.stage = out

    def refuse_existing(self, *relative: str) -> None:
        """Fail before any work when this case is already in the dataset folder (unless ``--overwrite``)."""
        clashes = [r for r in relative if self.merge and not self.overwrite and (self.out / r).exists()]
        if clashes:
            raise InputError(label_of(self.out), f"already holds {clashes[0]} (use --overwrite to replace it)")

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        from ..io import atomic_output_dir

        if not self.merge:
            with atomic_output_dir(self.out, overwrite=True) as tmp:
                self.stage = tmp
                yield tmp
            return
        self.stage = self.out.with_name(f".{self.out.name}.{uuid.uuid4().hex[:12]}.stage")
        self.stage.mkdir()
        try:
            yield self.stage
            self._publish()
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)

    def _publish(self) -> None:
        files = sorted((p for p in self.stage.rglob("*") if p.is_file()),
                       key=lambda p: (p.suffix in (".mhd", ".json", ".csv"), str(p)))  # data before headers
        rel = [p.relative_to(self.stage) for p in files]
        clashes = [r.as_posix() for r in rel if (self.out / r).exists() and r.name not in MERGED_FILES]
        if clashes and not self.overwrite:
            more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
            raise InputError(label_of(self.out), f"already holds {', '.join(clashes[:3])}{more} (use --overwrite)")
        for path, r in zip(files, rel):
            (self.out / r).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, self.out / r)

    def final(self, path: Path) -> str:
        """Where a staged file ends up."""
        return str(self.out / Path(path).relative_to(self.stage))


def _write_json(data, path: Path) -> Path:
    from ..io.atomic import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


def _centroid_lps(mask: Volume) -> np.ndarray | None:
    idx = np.argwhere(np.asarray(mask.array) != 0)
    return None if len(idx) == 0 else mask.index_to_physical(idx.mean(0)[::-1])


def _percentile_window(image: Volume) -> tuple[float, float]:
    values = np.asarray(image.array, float)
    values = values[values > 0] if np.any(values > 0) else values.ravel()
    lo, hi = np.percentile(values, [0.5, 99.5])
    return float(lo), float(max(hi, lo + 1e-3))


# --- chest --------------------------------------------------------------------------------------------------------
def luna16_series_uid(seed: int) -> str:
    """A DICOM-style series UID derived from the seed, so the same seed always names the same scan."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[f"clinseg-chest-phantom-{seed}"])


def run_chest(args: argparse.Namespace) -> int:
    from ..io import read_volume
    from ..phantoms import generate_chest, generate_chest_from_airway

    reporter = Reporter.from_args(args)
    out = Path(args.out)
    output = _Output(out, args.layout != "plain", args.overwrite)
    if args.subset < 0:
        raise InputError("--subset", f"must be 0 or more, got {args.subset}")
    if args.layout == "luna16":
        case_id = args.case_id or luna16_series_uid(args.seed)
        output.refuse_existing(f"subset{args.subset}/{case_id}.mhd")
    else:
        case_id = args.case_id or f"phantom_{args.seed}"
        output.refuse_existing(f"imagesTr/{case_id}_0000.nii.gz")
    if args.from_airway:
        reporter.log(f"building a chest CT around {args.from_airway} (seed {args.seed})")
        mask = read_volume(args.from_airway)
        ph = generate_chest_from_airway(mask, args.seed, noise_hu=args.noise_hu, kernel=args.kernel,
                                        with_vessels=not args.no_vessels, n_nodules=args.nodules)
    else:
        shape = tuple(int(v) for v in args.shape) if args.shape else None
        if shape and min(shape) < 8:
            raise InputError("--shape", "every size must be at least 8 voxels")
        reporter.log(f"generating chest phantom (seed {args.seed}, preset {args.preset or 'full'})")
        ph = generate_chest(args.seed, spacing=args.spacing, shape=shape, preset=args.preset,
                            noise_hu=args.noise_hu, kernel=args.kernel, with_vessels=not args.no_vessels,
                            n_nodules=args.nodules, motion=args.motion)
    with output.staged() as stage:
        files = _write_chest_layout(ph, stage, out, args.layout, case_id, args.subset)
        if args.gallery:
            files.update(_chest_gallery(ph, stage / "gallery", case_id))
    if args.layout == "atm22" and output.merge:
        from ..datasets import write_atm22

        write_atm22(out, [])  # recount the cases in dataset.json
    info = {k: v for k, v in ph.info.items() if k != "stages"}
    info.update(grid_ijk=list(ph.ct.size_ijk), spacing_mm=list(ph.ct.spacing), n_nodules=len(ph.nodules),
                airway_voxels=int(np.count_nonzero(ph.airway.array)))
    reporter.result({"out": str(out), "layout": args.layout, "case": case_id,
                     "files": {k: output.final(v) for k, v in files.items()}, "info": info})
    return 0


def _write_chest_layout(ph, stage: Path, out: Path, layout: str, case_id: str, subset: int) -> dict[str, Path]:
    from ..io import write_volume

    files: dict[str, Path] = {}
    if layout == "atm22":
        from ..datasets import write_atm22

        case = write_atm22(stage, [(case_id, ph.ct, ph.airway)])[0]
        files.update(image=case.image_path, label=case.label_path)
        extras = stage / "extras" / case_id
    elif layout == "luna16":
        files.update(_write_luna16(ph, stage, out, case_id, subset))
        extras = stage / "extras" / case_id
    else:
        extras = stage
        files["ct"] = write_volume(ph.ct, extras / "ct.nii.gz")
        files["airway"] = write_volume(ph.airway, extras / "airway.nii.gz")
    for name, vol in (("lumen", ph.lumen), ("lungs", ph.lungs), ("vessels", ph.vessels),
                      ("nodules", ph.nodule_labels)):
        files[name] = write_volume(vol, extras / f"{name}.nii.gz")
    files["nodules_json"] = _write_json(ph.nodules_json(), extras / "nodules.json")
    files["branches_json"] = _write_json({"branches": ph.branches_json()}, extras / "branches.json")
    return files


def _write_luna16(ph, stage: Path, out: Path, uid: str, subset: int) -> dict[str, Path]:
    """The scan as LUNA16 ships it, and this scan's rows merged into the root's annotation and candidate lists."""
    from ..datasets.luna16 import (
        LunaCandidate,
        LunaNodule,
        read_annotations,
        read_candidates,
        write_annotations,
        write_candidates,
        write_luna16_case,
    )

    mhd = write_luna16_case(stage, subset, uid, ph.ct)
    nodules = [LunaNodule(uid, tuple(float(v) for v in n.center_lps), float(n.diameter_mm)) for n in ph.nodules]
    candidates = [LunaCandidate(uid, n.centre, 1) for n in nodules]
    candidates += [LunaCandidate(uid, tuple(float(v) for v in (np.asarray(d.p0) + np.asarray(d.p1)) / 2), 0)
                   for d in ph.distractors]
    old_ann = read_annotations(out / "annotations.csv") if (out / "annotations.csv").is_file() else []
    old_cand = read_candidates(out / "candidates.csv") if (out / "candidates.csv").is_file() else []
    return {
        "image": mhd,
        "raw": mhd.with_suffix(".raw"),
        "annotations": write_annotations(stage / "annotations.csv",
                                         [n for n in old_ann if n.seriesuid != uid] + nodules),
        "candidates": write_candidates(stage / "candidates.csv",
                                       [c for c in old_cand if c.seriesuid != uid] + candidates),
    }


def _chest_gallery(ph, folder: Path, case_id: str) -> dict[str, Path]:
    from ..gallery import render_orthogonal, render_tree_3d

    files: dict[str, Path] = {}
    point = ph.branches[0].points_lps[-1] if ph.branches else None
    overlays = {"airway": ph.airway, "lungs": ph.lungs, "vessels": ph.vessels, "nodules": ph.nodule_labels}
    files["gallery_slices"] = render_orthogonal(ph.ct, overlays, folder / f"{case_id}_slices.png", point)
    files["gallery_airway_3d"] = render_tree_3d(ph.branches or ph.airway, folder / f"{case_id}_airway_3d.png",
                                                title="airway tree")
    if np.any(ph.vessels.array):
        files["gallery_vessels_3d"] = render_tree_3d(ph.vessels, folder / f"{case_id}_vessels_3d.png",
                                                     title="pulmonary vessels")
    if ph.nodules:
        big = max(ph.nodules, key=lambda n: n.diameter_mm)
        files["gallery_nodule"] = render_orthogonal(ph.ct, {"nodule": ph.nodule_labels},
                                                    folder / f"{case_id}_nodule.png", big.center_lps)
    return files


# --- head & neck --------------------------------------------------------------------------------------------------
def load_organ_masks(folder: str | Path, annotator: str = "oncologist") -> dict[str, Volume]:
    """Organ masks of one hn_oar scan folder (``<scan>/<annotator>/*.nrrd``) or of one annotator's folder."""
    from ..phantoms.hn_anatomy import canonical_organ_name

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(label_of(folder), "folder not found")
    source = folder if any(folder.glob("*.nrrd")) else folder / annotator
    if not source.is_dir():
        found = sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise InputError(label_of(folder), f"has no *.nrrd masks nor an annotator '{annotator}' (has {found})")
    paths = {canonical_organ_name(p.name[: -len(".nrrd")]): p for p in sorted(source.glob("*.nrrd"))}
    paths.pop(None, None)
    if not paths:
        raise InputError(label_of(source), "holds no organ mask with a known name")
    from ..io import read_volume

    out = {}
    for name, path in paths.items():
        vol = read_volume(path)
        out[str(name)] = vol.with_array((np.asarray(vol.array) != 0).astype(np.uint8), name=str(name))
    return out


def run_headneck(args: argparse.Namespace) -> int:
    from ..phantoms.headneck import generate_headneck, generate_headneck_from_masks

    reporter = Reporter.from_args(args)
    out = Path(args.out)
    output = _Output(out, args.layout != "plain", args.overwrite)
    case_id = args.case_id or f"phantom_{args.seed}"
    output.refuse_existing(case_id)
    if args.from_masks:
        masks = load_organ_masks(args.from_masks, args.annotator)
        if args.crop_margin_mm is not None:
            from ..datasets.hn_oar import crop_to_organs

            masks = crop_to_organs(masks, args.crop_margin_mm)
        reporter.log(f"building a head & neck CT around {len(masks)} organ masks (seed {args.seed})")
        ph = generate_headneck_from_masks(masks, args.seed, with_tumour=bool(args.tumour),
                                          margin_mm=args.margin_mm, tumour_site=args.tumour_site)
    else:
        reporter.log(f"generating head & neck phantom (seed {args.seed}, preset {args.preset})")
        ph = generate_headneck(args.seed, spacing=args.spacing, preset=args.preset,
                               with_tumour=args.tumour is not False, margin_mm=args.margin_mm,
                               tumour_site=args.tumour_site)
    with output.staged() as stage:
        files = _write_headneck_layout(ph, stage, args.layout, case_id)
        if args.gallery:
            files.update(_headneck_gallery(ph, stage / "gallery", case_id))
    voxel_ml = float(np.prod(ph.ct.spacing)) / 1000.0
    info = {"grid_ijk": list(ph.ct.size_ijk), "spacing_mm": list(ph.ct.spacing),
            "organs_ml": {s.name: round(float(ph.mask(s.name).sum()) * voxel_ml, 3) for s in ph.organs},
            "gtv_ml": None if ph.gtv is None else round(float(ph.gtv.array.sum()) * voxel_ml, 3),
            "ctv_ml": None if ph.ctv is None else round(float(ph.ctv.array.sum()) * voxel_ml, 3)}
    reporter.result({"out": str(out), "layout": args.layout, "case": case_id,
                     "files": {k: output.final(v) for k, v in files.items()}, "info": info})
    return 0


def headneck_structures(ph) -> dict[str, Volume]:
    """Each organ's full mask (children included, as a clinician contours them), then GTV and CTV."""
    masks = {s.name: ph.labels.with_array(ph.mask(s.name).astype(np.uint8), name=s.name) for s in ph.organs}
    for name, vol in (("GTV", ph.gtv), ("CTV", ph.ctv)):
        if vol is not None:
            masks[name] = vol
    return masks


def _write_headneck_layout(ph, stage: Path, layout: str, case_id: str) -> dict[str, Path]:
    from ..io import write_segmentation, write_volume

    files: dict[str, Path] = {}
    if layout == "pddca":
        from ..datasets.pddca import write_pddca_case

        folder = write_pddca_case(stage / case_id, ph.ct, headneck_structures(ph))
        files.update(image=folder / "img.nrrd", structures=folder / "structures")
    elif layout == "rtstruct":
        from ..datasets.rtstruct import ReferenceSeries, write_rtstruct
        from ..io.dicom_write import write_dicom_series

        written = write_dicom_series(ph.ct, stage / case_id / "CT", patient_id=case_id,
                                     description="ClinicalSeg head & neck phantom")
        series = ReferenceSeries(written.study_uid, written.series_uid, written.frame_uid, written.instance_uids,
                                 written.sop_class_uid, written.patient)
        colours = {s.name: s.color for s in ph.organs} | {"GTV": (1.0, 0.0, 0.0), "CTV": (1.0, 0.6, 0.0)}
        files["ct_series"] = written.folder
        files["rtstruct"] = write_rtstruct(stage / case_id / "RTSTRUCT" / "rtstruct.dcm", headneck_structures(ph),
                                           ph.ct, series, colours, {"GTV": "GTV", "CTV": "CTV"}, label=case_id)
    else:
        files["ct"] = write_volume(ph.ct, stage / "ct.nii.gz")
        files["organs"] = write_segmentation(stage / "organs.seg.nrrd", ph.labels, ph.organs)
        for name, vol in (("gtv", ph.gtv), ("ctv", ph.ctv), ("body", ph.body)):
            if vol is not None:
                files[name] = write_volume(vol, stage / f"{name}.nii.gz")
    return files


def _headneck_gallery(ph, folder: Path, case_id: str) -> dict[str, Path]:
    from ..gallery import render_orthogonal

    overlays = {"organs": ph.labels}
    for name, vol in (("GTV", ph.gtv), ("CTV", ph.ctv)):
        if vol is not None:
            overlays[name] = vol
    point = _centroid_lps(ph.gtv) if ph.gtv is not None else None
    path = render_orthogonal(ph.ct, overlays, folder / f"{case_id}_slices.png", point, SOFT_TISSUE_WINDOW,
                             title=f"head & neck phantom {case_id}")
    return {"gallery_slices": path}


# --- brain --------------------------------------------------------------------------------------------------------
def _brain_contrasts(args: argparse.Namespace) -> tuple[str, ...]:
    from ..phantoms.brain import CONTRASTS

    if args.contrasts is None:
        return BRAIN_CONTRASTS.get(args.layout, CONTRASTS)
    chosen = tuple(c.strip() for c in args.contrasts.split(",") if c.strip())
    unknown = [c for c in chosen if c not in CONTRASTS]
    if unknown or not chosen:
        raise InputError("--contrasts", f"unknown contrast(s) {unknown or chosen} (use {', '.join(CONTRASTS)})")
    missing = [c for c in BRAIN_CONTRASTS.get(args.layout, ()) if c not in chosen]
    if missing:
        raise InputError("--contrasts", f"the {args.layout} layout needs {', '.join(missing)}")
    return chosen


def run_brain(args: argparse.Namespace) -> int:
    from ..phantoms.brain import generate_brain

    reporter = Reporter.from_args(args)
    out = Path(args.out)
    contrasts = _brain_contrasts(args)
    case = args.case if args.case is not None else args.seed + 1
    if case < 0:
        raise InputError("--case", f"must be 0 or more, got {case}")
    output = _Output(out, args.layout != "plain", args.overwrite)
    output.refuse_existing(*{"atlas": [f"sub-r001s{case:03d}"], "isles2015": [str(case)],
                             "isles2022": [f"rawdata/sub-strokecase{case:04d}"]}.get(args.layout, []))
    lesion = None if args.lesion == "none" else args.lesion
    reporter.log(f"generating brain phantom (seed {args.seed}, preset {args.preset}, lesion {args.lesion})")
    ph = generate_brain(args.seed, spacing=args.spacing, preset=args.preset, contrasts=contrasts, lesion=lesion,
                        stage=args.stage)
    with output.staged() as stage:
        case_id, files = _write_brain_layout(ph, stage, args.layout, case, args.seed)
        if args.gallery:
            files.update(_brain_gallery(ph, stage / "gallery", case_id))
    info = {"grid_ijk": list(ph.lesion.size_ijk), "spacing_mm": list(ph.lesion.spacing), "contrasts": list(contrasts),
            "lesion": ph.lesion_kind, "stage": ph.stage, "side": ph.side,
            "lesion_volume_ml": round(float(ph.lesion_volume_ml), 3)}
    reporter.result({"out": str(out), "layout": args.layout, "case": case_id,
                     "files": {k: output.final(v) for k, v in files.items()}, "info": info})
    return 0


def _write_brain_layout(ph, stage: Path, layout: str, case: int, seed: int) -> tuple[str, dict[str, Path]]:
    from ..datasets import stroke
    from ..io import write_volume

    if layout == "atlas":
        written = stroke.write_atlas_case(stage, f"sub-r001s{case:03d}", ph.images["T1"], ph.lesion)
    elif layout == "isles2015":
        images = {k: ph.images[k] for k in BRAIN_CONTRASTS["isles2015"]}
        written = stroke.write_isles2015_case(stage, case, images, ph.lesion)
    elif layout == "isles2022":
        written = stroke.write_isles2022_case(stage, case, ph.images["DWI"], ph.images["ADC"],
                                              ph.images.get("FLAIR"), ph.lesion)
    else:
        from ..phantoms.brain import LABELS

        files = {name: write_volume(vol, stage / f"{name}.nii.gz") for name, vol in ph.images.items()}
        files["labels"] = write_volume(ph.labels, stage / "labels.nii.gz")
        files["lesion"] = write_volume(ph.lesion, stage / "lesion.nii.gz")
        files["labels_json"] = _write_json({"labels": LABELS, "info": ph.info}, stage / "labels.json")
        return f"phantom_{seed}", files
    files = dict(written.images)
    files["lesion"] = written.lesions[0]
    return written.case_id, files


def _brain_gallery(ph, folder: Path, case_id: str) -> dict[str, Path]:
    from ..gallery import render_orthogonal
    from ..phantoms.brain import LABELS

    name = next(c for c in ("FLAIR", "DWI", "T2", "T1", "ADC") if c in ph.images)
    image = ph.images[name]
    overlays = {"lesion": ph.lesion, "ventricles": ph.labels.with_array(ph.labels.array == LABELS["ventricles"])}
    path = render_orthogonal(image, overlays, folder / f"{case_id}_slices.png", _centroid_lps(ph.lesion),
                             _percentile_window(image), title=f"brain phantom {case_id} ({name})")
    return {"gallery_slices": path}
