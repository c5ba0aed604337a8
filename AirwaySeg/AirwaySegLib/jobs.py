"""One segmentation run in the background: input volume -> temp .nrrd -> ``clinseg airway`` child -> nodes.

``AirwayJob`` prepares the arguments (checking everything it can before the minutes-long run, e.g. that
the output segmentation may be filled), runs the child through ``ClinicalSegLib.runner.ProcessRunner``
when the caller waits, and imports the output folder into the scene. The module widget instead hands
``prepare()``'s arguments to the Qt ``SlicerTaskRunner`` and calls ``import_outputs`` from its result
callback. No Qt here: runs on ``slicer-core``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import slicer
from ClinicalSegLib.mrml import volume_from_volume_node
from ClinicalSegLib.runner import ProcessRunner, clinseg_command, clinseg_environment, slicer_python_executable
from ClinicalSegLib.widgets import DEVICE_CHOICES

from clinseg.errors import InputError
from clinseg.io import write_volume
from clinseg.volume import LPS_TO_RAS

from .models import ENGINES
from .outputs import import_output_folder
from .routes import target_lps

INPUT_NAME = "input.nrrd"
OUTPUT_NAME = "out"
_DEVICE_PREFIXES = ("auto", "cpu", "cuda", "mps")


def device_option(device: str) -> str:
    """The CLI's ``--device`` for a selector item (``"GPU"`` -> ``"cuda"``) or a device string (``"cuda:1"``)."""
    if device in DEVICE_CHOICES:
        return DEVICE_CHOICES[device]
    text = str(device).strip().lower()
    name, _, index = text.partition(":")
    if name in _DEVICE_PREFIXES and (not index or (name == "cuda" and index.isdigit())):
        return text
    raise InputError("device", f"unknown device '{device}' (Auto, CPU, GPU, or auto, cpu, cuda, cuda:N, mps)")


def airway_arguments(ct_path: str | Path, out_dir: str | Path, engine: str = "auto", model_id: str | None = None,
                     device: str = "auto", target_ras: Sequence[float] | None = None,
                     scope_diameter_mm: float | None = None) -> list[str]:
    """Arguments of ``clinseg airway`` (without ``--progress``, which the runner adds)."""
    if engine not in ENGINES:
        raise InputError("engine", f"unknown engine '{engine}' (choose from {', '.join(ENGINES)})")
    # No PNG preview: Slicer shows the results itself (and need not have matplotlib).
    args = ["airway", str(ct_path), "-o", str(out_dir), "--engine", engine, "--device", device_option(device),
            "--no-preview"]
    if model_id:
        args += ["--model", model_id]
    if target_ras is not None:
        # One token: a value starting with "-" would otherwise be parsed as an option.
        args += ["--target=" + ",".join(f"{float(v):.4f}" for v in target_ras), "--ras"]
    if scope_diameter_mm is not None:
        if not scope_diameter_mm > 0:
            raise InputError("scope diameter", f"must be positive, got {scope_diameter_mm}")
        args += ["--scope-diameter", f"{float(scope_diameter_mm):g}"]
    return args


class AirwayJob:
    """Everything about one run of the airway pipeline on a volume node, from temp files to imported nodes."""

    def __init__(
        self,
        scene: slicer.vtkMRMLScene,
        input_volume_node: slicer.vtkMRMLScalarVolumeNode,
        engine: str = "auto",
        model_id: str | None = None,
        device: str = "auto",
        target: Any = None,
        scope_diameter_mm: float | None = None,
        output_segmentation_node: slicer.vtkMRMLSegmentationNode | None = None,
        overwrite: bool = False,
        closed_surface: bool = False,
        work_dir: str | Path | None = None,
    ) -> None:
        if input_volume_node is None or input_volume_node.GetImageData() is None:
            raise InputError("input volume", "select a volume with image data")
        if output_segmentation_node is not None and not overwrite:
            count = output_segmentation_node.GetSegmentation().GetNumberOfSegments()
            if count:  # refuse now, not after minutes of inference
                raise InputError(output_segmentation_node.GetName(),
                                 f"already holds {count} segment(s); choose another output or allow overwriting")
        self.scene, self.input_volume_node = scene, input_volume_node
        self.output_segmentation_node, self.overwrite, self.closed_surface = (
            output_segmentation_node, overwrite, closed_surface)
        self.target_ras = None if target is None else LPS_TO_RAS @ target_lps(target)
        self.engine, self.model_id, self.device, self.scope_diameter_mm = engine, model_id, device, scope_diameter_mm
        airway_arguments("ct", "out", engine, model_id, device, self.target_ras, scope_diameter_mm)  # validate now
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.runner: ProcessRunner | None = None
        self.nodes: dict[str, Any] | None = None

    @property
    def out_dir(self) -> Path:
        if self.work_dir is None:
            raise RuntimeError("call prepare() first")
        return self.work_dir / OUTPUT_NAME

    def prepare(self) -> list[str]:
        """Write the input volume (world geometry, LPS) to the work folder; return the CLI arguments."""
        volume = volume_from_volume_node(self.input_volume_node)
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="AirwaySeg-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        ct_path = write_volume(volume, self.work_dir / INPUT_NAME)
        return airway_arguments(ct_path, self.out_dir, self.engine, self.model_id, self.device, self.target_ras,
                                self.scope_diameter_mm)

    def start(self) -> ProcessRunner:
        """Start the child process (non-blocking); poll the returned runner, then call ``import_outputs``."""
        args = self.prepare()
        self.runner = ProcessRunner(clinseg_command(args, python=slicer_python_executable()),
                                    env=clinseg_environment())
        self.runner.start()
        return self.runner

    def import_outputs(self, result_event: dict | None = None) -> dict[str, Any]:
        """Import the finished run's folder (``result_event["out"]`` when given) into the scene."""
        folder = Path(result_event["out"]) if result_event and result_event.get("out") else self.out_dir
        self.nodes = import_output_folder(self.scene, folder, self.input_volume_node, self.output_segmentation_node,
                                          overwrite=self.overwrite, closed_surface=self.closed_surface)
        return self.nodes

    def run(self, timeout: float | None = None, on_event: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """Run to the end (blocking), import, clean up; raises ``RunError``/``Cancelled``/``TimeoutError``."""
        try:
            runner = self.start()
            result = runner.wait(timeout=timeout, on_event=on_event)
            return self.import_outputs(result)
        finally:
            self.cleanup()

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()

    def cleanup(self) -> None:
        """Delete the temporary work folder (the nodes hold the results)."""
        if self._own_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
