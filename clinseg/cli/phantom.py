"""``clinseg phantom chest``: write a synthetic chest CT and its exact ground truth.

Layouts: ``plain`` (``ct.nii.gz``, ``airway.nii.gz``, ``lumen.nii.gz``,
``lungs.nii.gz``, ``vessels.nii.gz``, ``nodules.nii.gz``, ``nodules.json``,
``branches.json``) or ``atm22`` (``imagesTr/<id>_0000.nii.gz`` +
``labelsTr/<id>.nii.gz`` + ``dataset.json``, the other labels under
``extras/<id>/``), so several seeds can fill one training folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from .reporting import Reporter, add_common_arguments


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got '{text}'") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got '{text}'")
    return values


def register(subparsers) -> None:
    p = subparsers.add_parser("phantom", help="generate synthetic CT phantoms with exact ground truth")
    kinds = p.add_subparsers(dest="kind", required=True)
    c = kinds.add_parser("chest", help="chest CT with airway tree, lungs, vessels and nodules")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--preset", choices=["small", "demo", "full"], default=None,
                   help="grid preset: small 160x160x128 @1.4 mm, demo 256x256x224 @1 mm, full 512x512x300 @0.7x0.7x1")
    c.add_argument("--spacing", type=_triple, default=None, help="i,j,k spacing in mm (e.g. 0.7,0.7,1.0)")
    c.add_argument("--shape", type=_triple, default=None, help="i,j,k size in voxels")
    c.add_argument("--noise-hu", type=float, default=None, help="noise sigma in soft tissue (default: 15-45 by seed)")
    c.add_argument("--kernel", choices=["soft", "standard", "sharp", "lung"], default=None)
    c.add_argument("--nodules", type=int, default=None, help="number of nodules (default: 1-4 by seed)")
    c.add_argument("--no-vessels", action="store_true")
    c.add_argument("--motion", action="store_true", help="add a breathing/cardiac motion blur")
    c.add_argument("--from-airway", default=None, metavar="MASK",
                   help="build the CT around this real airway mask (it becomes the ground truth)")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--layout", choices=["plain", "atm22"], default="plain")
    c.add_argument("--case-id", default=None, help="case id in the atm22 layout (default: phantom_<seed>)")
    c.add_argument("--gallery", action="store_true", help="also write PNG slices and a 3-D tree view")
    add_common_arguments(c)
    c.set_defaults(func=run_chest)


def _write_json(data, path: Path) -> None:
    from ..io.atomic import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def run_chest(args: argparse.Namespace) -> int:
    from ..io import read_volume, write_volume
    from ..phantoms import generate_chest, generate_chest_from_airway

    reporter = Reporter.from_args(args)
    out = Path(args.out)
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
    case_id = args.case_id or f"phantom_{args.seed}"
    files: dict[str, str] = {}
    if args.layout == "atm22":
        from ..datasets import write_atm22

        case = write_atm22(out, [(case_id, ph.ct, ph.airway)])[0]
        files.update(image=str(case.image_path), label=str(case.label_path))
        extras = out / "extras" / case_id
    else:
        extras = out
        files["ct"] = str(write_volume(ph.ct, extras / "ct.nii.gz"))
        files["airway"] = str(write_volume(ph.airway, extras / "airway.nii.gz"))
    for name, vol in (("lumen", ph.lumen), ("lungs", ph.lungs), ("vessels", ph.vessels),
                      ("nodules", ph.nodule_labels)):
        files[name] = str(write_volume(vol, extras / f"{name}.nii.gz"))
    _write_json(ph.nodules_json(), extras / "nodules.json")
    _write_json({"branches": ph.branches_json()}, extras / "branches.json")
    files.update(nodules_json=str(extras / "nodules.json"), branches_json=str(extras / "branches.json"))
    if args.gallery:
        from ..gallery import render_orthogonal, render_tree_3d

        gallery = out / "gallery"
        point = ph.branches[0].points_lps[-1] if ph.branches else None
        overlays = {"airway": ph.airway, "lungs": ph.lungs, "vessels": ph.vessels, "nodules": ph.nodule_labels}
        files["gallery_slices"] = str(render_orthogonal(ph.ct, overlays, gallery / f"{case_id}_slices.png", point))
        files["gallery_tree"] = str(render_tree_3d(ph.branches or ph.airway, gallery / f"{case_id}_tree.png"))
        if ph.nodules:
            big = max(ph.nodules, key=lambda n: n.diameter_mm)
            files["gallery_nodule"] = str(render_orthogonal(ph.ct, {"nodule": ph.nodule_labels},
                                                            gallery / f"{case_id}_nodule.png", big.center_lps))
    reporter.result({"out": str(out), "files": files,
                     "info": {k: v for k, v in ph.info.items() if k != "stages"}})
    return 0
