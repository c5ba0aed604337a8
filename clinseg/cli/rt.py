"""``clinseg rt export|import``: segmentations to and from DICOM RT Structure Sets (and DICOM SEG) on a CT series.

``export SEG.seg.nrrd --ct DICOMDIR -o OUT.dcm``: one ROI per segment, contours on the CT slices, referencing the
series' study, series, frame of reference and slice SOP instances; RT ROI Interpreted Type from the name (GTV*,
CTV*, PTV*, Body/External, else ORGAN) or ``--type NAME=TYPE`` (e.g. ``--type "Spinal cord=AVOIDANCE"``).
``--format seg`` writes a DICOM Segmentation instead (highdicom). A segment that contains others (the spinal canal
around the cord, ``Segment.contains`` from a layered ``.seg.nrrd``) is exported at its full extent.
``import RTSTRUCT --ct DICOMDIR -o OUT.seg.nrrd``: every ROI as a segment on the CT grid (a ROI lying wholly inside
another is recorded as contained in it). Existing outputs are refused unless ``--overwrite``; files are written
atomically (a failed run leaves nothing half-written).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser("rt", help="DICOM RTSTRUCT / SEG export and RTSTRUCT import on a CT series",
                              description=__doc__.split("\n\n", 1)[1])
    actions = p.add_subparsers(dest="rt_action", required=True)
    e = actions.add_parser("export", help="segmentation -> RTSTRUCT (or DICOM SEG) referencing a CT series")
    e.add_argument("segmentation", help=".seg.nrrd (or a label map image) on, or resampled onto, the CT's grid")
    e.add_argument("--ct", required=True, help="folder of the CT series the structures are drawn on")
    e.add_argument("-o", "--out", required=True, help="output .dcm")
    e.add_argument("--format", choices=("rtstruct", "seg"), default="rtstruct")
    e.add_argument("--type", action="append", default=[], metavar="NAME=TYPE",
                   help="RT ROI Interpreted Type of one structure (ORGAN, GTV, CTV, PTV, AVOIDANCE, EXTERNAL...)")
    e.add_argument("--label", default="ClinSeg", help="structure set label (16 characters)")
    e.add_argument("--series-uid", help="which CT series, when the folder holds several")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    e.set_defaults(func=run_export)
    i = actions.add_parser("import", help="RTSTRUCT -> .seg.nrrd on the CT grid")
    i.add_argument("rtstruct", help="RT Structure Set file")
    i.add_argument("--ct", required=True, help="folder of the CT series it references")
    i.add_argument("-o", "--out", required=True, help="output .seg.nrrd")
    i.add_argument("--series-uid", help="which CT series, when the folder holds several")
    i.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    i.set_defaults(func=run_import)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InputError(str(path), "exists (choose another name or pass --overwrite)")


def _types(pairs: list[str]) -> dict[str, str]:
    from ..io.rtstruct import check_roi_type

    out = {}
    for pair in pairs:
        name, sep, kind = pair.rpartition("=")
        if not sep or not name.strip():
            raise InputError("--type", f"expected NAME=TYPE, got {pair!r}")
        out[name.strip()] = check_roi_type(name.strip(), kind)
    return out


def run_export(args: argparse.Namespace) -> int:
    import numpy as np

    from ..containment import SegmentMasks
    from ..io import read_dicom_series, read_segmentation
    from ..io.rtstruct import ReferenceSeries, roi_type_for, write_rtstruct
    from ..preprocess import resample_to

    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    types = _types(args.type)
    ct = read_dicom_series(args.ct, args.series_uid)
    labelmap, segments = read_segmentation(args.segmentation)
    unknown = set(types) - {s.name for s in segments}
    if unknown:
        raise InputError("--type", f"no segment named {', '.join(sorted(unknown))}")
    if not labelmap.same_grid(ct, tol=1e-3):
        labelmap = resample_to(labelmap, ct, order=0)  # nearest: labels stay labels
    series = ReferenceSeries.from_dicom(args.ct, ct, args.series_uid)
    if args.format == "seg":
        from ..io.dicom_seg import series_datasets, write_dicom_seg

        write_dicom_seg(out, labelmap, segments, series_datasets(args.ct, ct, series.series_uid), overwrite=True)
        print(f"wrote {out}: DICOM SEG, {len(segments)} segments on series {series.series_uid}")
        return 0
    masks = dict(SegmentMasks(labelmap.array, segments))
    empty = [name for name, m in masks.items() if not np.any(m)]
    masks = {name: m for name, m in masks.items() if np.any(m)}
    if not masks:
        raise InputError(str(args.segmentation), "every segment is empty: nothing to export")
    roi_types = {name: types.get(name) or roi_type_for(name) for name in masks}
    write_rtstruct(out, masks, ct, series, {s.name: s.color for s in segments}, roi_types, label=args.label,
                   overwrite=True)  # existence was checked before the slow part
    print(f"wrote {out}: {len(masks)} ROIs on series {series.series_uid}")
    for name, kind in roi_types.items():
        print(f"  {name}: {kind}")
    if empty:
        print(f"  skipped (empty): {', '.join(empty)}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import numpy as np

    from ..io import read_dicom_series, write_segmentation
    from ..io.rtstruct import read_rtstruct
    from ..terminology import Segment

    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    ct = read_dicom_series(args.ct, args.series_uid)
    structures = read_rtstruct(args.rtstruct, ct)
    if not structures:
        raise InputError(str(args.rtstruct), "holds no ROIs")
    # One label map: larger structures first, so a structure drawn inside another (GTV in CTV, lens in eye)
    # keeps its voxels; the enclosing one records it in ``contains`` and keeps its full extent on a layer of its own.
    order = sorted(range(len(structures)), key=lambda n: -int(np.count_nonzero(structures[n].mask.array)))
    labels = np.zeros(ct.shape, np.uint16 if len(structures) > 255 else np.uint8)
    segments = []
    for number, index in enumerate(order, start=1):
        s = structures[index]
        labels[s.mask.array > 0] = number
        segments.append(Segment(number, s.name, s.color))
    for n, index in enumerate(order):
        inner = np.flatnonzero(structures[index].mask.array)
        outer = [segments[m] for m, other in enumerate(order[:n])
                 if inner.size and np.all(structures[other].mask.array.ravel()[inner])]
        for m, segment in enumerate(segments):
            if segment in outer:
                segments[m] = replace(segment, contains=(*segment.contains, segments[n].name))
    write_segmentation(out, ct.with_array(labels, "structures"), segments)
    print(f"wrote {out}: {len(segments)} segments")
    for s in structures:
        print(f"  {s.name}: {s.roi_type or '(no type)'}")
    return 0
