"""Export a segmentation as a DICOM RT Structure Set through ``clinseg rt export`` (a background command).

An RTSTRUCT is only useful to a planning system when it references the very CT series it was drawn on, so the CT
must come from DICOM: its slices' files are found in Slicer's DICOM database from the node's instance UIDs and
linked into a folder of their own (the core then reads exactly that series). The segmentation is written on the
CT's grid as a ``.seg.nrrd``. An existing output file is never replaced unless the caller says so (after asking).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ClinicalSegLib.jobs import CommandJob, RunnerFactory
from ClinicalSegLib.mrml_segmentation import labelmap_from_segmentation_node
from ClinicalSegLib.mrml_volume import volume_from_volume_node
from ClinicalSegLib.runner import ProcessRunner, clinseg_command, clinseg_environment, slicer_python_executable

from clinseg.errors import InputError

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"  # set by Slicer's DICOM loader: the slices' SOP instance UIDs


def rt_export_available() -> bool:
    """Whether this core has the ``clinseg rt`` command (the button is hidden otherwise)."""
    try:
        from clinseg.cli import COMMAND_MODULES
    except ImportError:
        return False
    return "rt" in COMMAND_MODULES and importlib.util.find_spec("clinseg.cli.rt") is not None


def dicom_files_of(volume_node: Any, database: Any) -> list[Path]:
    """The DICOM files of the slices ``volume_node`` was loaded from (``database.fileForInstance`` per UID)."""
    text = volume_node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or ""
    uids = text.split()
    if not uids:
        raise InputError(volume_node.GetName(), "was not loaded from DICOM; an RTSTRUCT must reference the CT's "
                                                "DICOM series (load the CT from the DICOM database)")
    files = [database.fileForInstance(uid) if database is not None else "" for uid in uids]
    missing = sum(1 for path in files if not path or not Path(path).is_file())
    if missing:
        raise InputError(volume_node.GetName(), f"{missing} of its {len(uids)} DICOM files are not in the DICOM "
                                                "database any more")
    return [Path(path) for path in files]


def rt_runner(args: Sequence[str]) -> ProcessRunner:
    """``PythonSlicer -m clinseg rt ...`` without ``--progress``: the command has no progress output of its own
    (it takes seconds) and says what it wrote in plain lines, which reach the console as log events."""
    return ProcessRunner(clinseg_command(args, python=slicer_python_executable(), progress=False),
                         env=clinseg_environment())


def rt_export_arguments(segmentation_file: str | Path, ct_folder: str | Path, output: str | Path,
                        overwrite: bool = False) -> list[str]:
    """``clinseg rt export SEG --ct DICOMDIR -o OUT.dcm [--overwrite]``."""
    args = ["rt", "export", str(segmentation_file), "--ct", str(ct_folder), "-o", str(output)]
    return args + (["--overwrite"] if overwrite else [])


class RtExportJob(CommandJob):
    """Writes the inputs to a work folder, runs ``clinseg rt export``, removes the work folder at the end."""

    def __init__(self, segmentation_node: Any, ct_node: Any, output: str | Path, dicom_files: Sequence[Path],
                 overwrite: bool = False, runner_factory: RunnerFactory = rt_runner) -> None:
        super().__init__([], runner_factory)
        if segmentation_node is None or segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
            raise InputError("segmentation", "holds no segment to export")
        self.output = Path(output)
        if self.output.exists() and not overwrite:  # checked here and again by the command (atomic write)
            raise InputError(str(self.output), "exists; choose another file or allow replacing it")
        self.segmentation_node, self.ct_node = segmentation_node, ct_node
        self.dicom_files, self.overwrite = list(dicom_files), overwrite
        self.work_dir: Path | None = None

    def prepare(self) -> list[str]:
        self.work_dir = Path(tempfile.mkdtemp(prefix="ClinicalSeg-rt-"))
        try:
            return self._write_inputs(self.work_dir)
        except Exception:
            self.cleanup()
            raise

    def _write_inputs(self, folder: Path) -> list[str]:
        from clinseg.io import write_segmentation

        ct_folder = folder / "ct"
        ct_folder.mkdir()
        for n, path in enumerate(self.dicom_files):
            link = ct_folder / f"{n:05d}.dcm"
            try:
                os.symlink(path, link)
            except OSError:  # e.g. Windows without the right to make links
                shutil.copyfile(path, link)
        reference = volume_from_volume_node(self.ct_node)
        labelmap, segments = labelmap_from_segmentation_node(self.segmentation_node, reference=reference)
        segmentation_file = write_segmentation(folder / "structures.seg.nrrd", labelmap, segments)
        return rt_export_arguments(segmentation_file, ct_folder, self.output, self.overwrite)

    def outcome(self, result_event: dict | None) -> Path:
        if not self.output.is_file():
            raise InputError(str(self.output), "was not written")
        return self.output

    def cleanup(self) -> None:
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
