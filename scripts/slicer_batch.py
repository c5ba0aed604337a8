"""Run a ClinicalSeg module's logic over many scans inside 3D Slicer, without its main window.

Usage (everything after the script's path is this script's own arguments)::

    Slicer --no-main-window --python-script scripts/slicer_batch.py \
        --module AirwaySeg --input /data/chest_cts --out /data/airway_out --engine classical
    Slicer --no-main-window --python-script scripts/slicer_batch.py \
        --module AirwaySeg --dicom-database /data/SlicerDICOMDatabase --out /data/airway_out
    Slicer --no-main-window --python-script scripts/slicer_batch.py \
        --module AirwaySeg --dicom-folder /data/dicom_export --out /data/airway_out

``--input``: every image file (NIfTI, NRRD, MetaImage) of a folder is one case. ``--dicom-database``: every series
of an existing Slicer DICOM database; ``--dicom-folder``: the series of a DICOM folder, imported into a temporary
database first. Each case gets ``<out>/<case>/`` with the nodes the module made (``.seg.nrrd``, ``.mrk.json``,
``.csv``), written into a hidden folder and renamed when complete; a case whose folder exists is skipped (delete
it to redo). A failed case gets ``<out>/<case>.failed.txt`` with its one-line reason and the batch goes on.
The exit code is 0 when every case finished, 1 otherwise. For thousands of cases or a cluster use
``clinseg batch`` instead (docs/batch.md): it resumes by content hash and runs on Dask.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slicer_batch.py", description="a ClinicalSeg module over many scans")
    p.add_argument("--module", default="AirwaySeg", help="AirwaySeg, NoduleSeg, OARSeg or StrokeSeg")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="a folder of image files, one case each")
    source.add_argument("--dicom-database", help="a Slicer DICOM database folder: one case per series")
    source.add_argument("--dicom-folder", help="a DICOM folder, imported into a temporary database")
    p.add_argument("--out", required=True, help="output folder, one sub-folder per case")
    p.add_argument("--engine", default="auto")
    p.add_argument("--model", dest="model_id", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--timeout", type=float, default=None, help="seconds per case (default: none)")
    return p.parse_args(argv)


def case_name(text: str) -> str:
    """A folder name from a file name or a series description."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"


def image_cases(folder: Path) -> list[tuple[str, Path]]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    names = []
    for path in files:
        stem = next(path.name[: -len(s)] for s in sorted(IMAGE_SUFFIXES, key=len, reverse=True)
                    if path.name.lower().endswith(s))
        names.append(case_name(stem))
    return list(zip(names, files))


def series_cases(database) -> list[tuple[str, str]]:
    """``(case name, series UID)`` for every series of ``database`` (a ctkDICOMDatabase)."""
    cases = []
    for patient in database.patients():
        for study in database.studiesForPatient(patient):
            for uid in database.seriesForStudy(study):
                files = database.filesForSeries(uid)
                description = database.fileValue(files[0], "0008,103e") if files else ""
                patient_id = database.fileValue(files[0], "0010,0020") if files else ""
                cases.append((case_name(f"{patient_id}_{description}_{uid[-8:]}"), uid))
    return cases


def save_nodes(nodes: dict, folder: Path) -> list[Path]:
    """Every segmentation, markups and table node the module made, under its own name."""
    import slicer

    saved = []
    for node in nodes.values():
        if not hasattr(node, "IsA"):
            continue  # e.g. the metrics dict
        if node.IsA("vtkMRMLSegmentationNode"):
            suffix = ".seg.nrrd"
        elif node.IsA("vtkMRMLMarkupsNode"):
            suffix = ".mrk.json"
        elif node.IsA("vtkMRMLTableNode"):
            suffix = ".csv"
        else:
            continue
        path = folder / f"{case_name(node.GetName())}{suffix}"
        if not slicer.util.saveNode(node, str(path)):
            raise RuntimeError(f"could not save {node.GetName()} to {path}")
        saved.append(path)
    return saved


def remove_nodes(nodes: dict, volume) -> None:
    import slicer

    for node in [*nodes.values(), volume]:
        if hasattr(node, "IsA") and slicer.mrmlScene.IsNodePresent(node):
            slicer.mrmlScene.RemoveNode(node)


def run_case(logic, name: str, load, out: Path, args: argparse.Namespace) -> str | None:
    """Load, process, save one case into ``out/name`` (atomically); returns the failure reason or None."""
    target = out / name
    if target.is_dir():
        print(f"{name}: already done, skipped")
        return None
    work = out / f".{name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    volume, nodes = None, {}
    started = time.monotonic()
    try:
        volume = load()
        nodes = logic.process(volume, engine=args.engine, modelId=args.model_id, device=args.device,
                              timeout=args.timeout)
        work.mkdir(parents=True)
        save_nodes(nodes, work)
        os.replace(work, target)
        (out / f"{name}.failed.txt").unlink(missing_ok=True)
        print(f"{name}: done in {time.monotonic() - started:.1f} s")
        return None
    except Exception as error:  # one bad case never stops the batch
        reason = " ".join(str(error).split()) or type(error).__name__
        (out / f"{name}.failed.txt").write_text(reason + "\n")
        print(f"{name}: FAILED {reason}")
        return reason
    finally:
        shutil.rmtree(work, ignore_errors=True)
        remove_nodes(nodes, volume)


def load_series(uid: str):
    import slicer
    from DICOMLib import DICOMUtils

    node_ids = DICOMUtils.loadSeriesByUID([uid])
    volumes = [slicer.mrmlScene.GetNodeByID(i) for i in node_ids]
    volumes = [n for n in volumes if n is not None and n.IsA("vtkMRMLScalarVolumeNode")]
    if not volumes:
        raise RuntimeError(f"series {uid} loads no scalar volume")
    return volumes[0]


def main(argv: list[str]) -> int:
    import slicer

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logic = slicer.util.getModuleLogic(args.module)
    if logic is None:
        print(f"module {args.module} is not loaded (is the ClinicalSeg extension installed?)")
        return 2
    failed = []
    if args.input:
        for name, path in image_cases(Path(args.input)):
            if run_case(logic, name, lambda p=path: slicer.util.loadVolume(str(p)), out, args):
                failed.append(name)
    else:
        from DICOMLib import DICOMUtils

        def run_database(database) -> None:
            for name, uid in series_cases(database):
                if run_case(logic, name, lambda u=uid: load_series(u), out, args):
                    failed.append(name)

        if args.dicom_database:
            DICOMUtils.openDatabase(args.dicom_database)
            run_database(slicer.dicomDatabase)
        else:
            with DICOMUtils.TemporaryDICOMDatabase() as database:
                DICOMUtils.importDicom(args.dicom_folder, database)
                run_database(database)
    print(f"{len(failed)} case(s) failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    import slicer

    slicer.util.exit(code)
