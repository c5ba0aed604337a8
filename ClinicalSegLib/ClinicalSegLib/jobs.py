"""One background run of a task: volume nodes -> temporary files -> ``clinseg <task>`` child -> nodes.

``TaskJob`` checks what it can before the minutes-long run (the output segmentation may be filled, the
options are valid), writes the inputs in world geometry, starts the child through a runner factory
(injectable: tests pass a stand-in or a tiny real process), and imports the output folder when the child
succeeds. ``CommandJob`` is the same lifecycle for a plain command (a model download). Both are polled by
whoever waits: ``run()`` blocks (scripts), the widget's Qt timer calls ``poll()`` and ``finish()``.
No Qt here: runs on ``slicer-core``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import slicer

from clinseg.errors import InputError
from clinseg.io import write_volume
from clinseg.output import read_result

from .mrml_result import ImportRequest, import_result
from .mrml_segmentation import labelmap_from_segmentation_node
from .mrml_volume import volume_from_volume_node
from .runner import ProcessRunner, RunError, clinseg_command, clinseg_environment, slicer_python_executable
from .task import TaskSpec, task_arguments

OUTPUT_NAME = "out"
RunnerFactory = Callable[[Sequence[str]], Any]  # clinseg arguments -> an unstarted ProcessRunner-like object


def input_nodes(input_volume: Any) -> list:
    """The input volume node(s) as a list; refuses none, or one without image data, before anything runs."""
    nodes = list(input_volume) if isinstance(input_volume, list | tuple) else [input_volume]
    if not nodes or any(node is None or node.GetImageData() is None for node in nodes):
        raise InputError("input volume", "select a volume with image data")
    return nodes


def clinseg_runner(args: Sequence[str]) -> ProcessRunner:
    """The default runner: ``PythonSlicer -m clinseg <args> --progress jsonl`` in its own process group."""
    return ProcessRunner(clinseg_command(args, python=slicer_python_executable()), env=clinseg_environment())


class CommandJob:
    """A ``clinseg`` command in the background whose outcome is its ``result`` event."""

    def __init__(self, args: Sequence[str], runner_factory: RunnerFactory = clinseg_runner) -> None:
        self.args = list(args)
        self.runner_factory = runner_factory
        self.runner: Any = None
        self.started_at: float | None = None

    def prepare(self) -> list[str]:
        return self.args

    def start(self) -> CommandJob:
        if self.runner is not None:
            raise RuntimeError("this job was already started")
        args = self.prepare()
        self.runner = self.runner_factory(args)
        self.started_at = time.monotonic()
        try:
            self.runner.start()
        except Exception:
            self.cleanup()
            raise
        return self

    def poll(self) -> list[dict]:
        return self.runner.poll() if self.runner is not None else []

    @property
    def finished(self) -> bool:
        return self.runner is not None and self.runner.finished

    @property
    def running(self) -> bool:
        return self.runner is not None and not self.runner.finished

    def failure_message(self) -> str | None:
        return self.runner.failure_message() if self.runner is not None else "not started"

    def cancel(self) -> None:
        """Ask the child to stop (SIGTERM: it finishes its work unit and writes nothing); the runner kills the
        process tree if it has not ended within a few seconds."""
        if self.runner is not None:
            self.runner.cancel()

    def finish(self) -> Any:
        """After the child ended: its outcome, or ``RunError``/``Cancelled``; cleans up either way."""
        try:
            result = self.runner.wait()  # returns at once once finished; raises on failure or cancel
            return self.outcome(result)
        finally:
            self.cleanup()

    def outcome(self, result_event: dict | None) -> Any:
        return result_event

    def run(self, timeout: float | None = None, on_event: Callable[[dict], None] | None = None) -> Any:
        """Start, block until the end, return the outcome; raises ``RunError``/``Cancelled``/``TimeoutError``."""
        if self.runner is None:
            self.start()
        try:
            self.runner.wait(timeout=timeout, on_event=on_event)
        except BaseException:
            self.cleanup()
            raise
        return self.finish()

    def cleanup(self) -> None:
        """Nothing to clean up for a plain command."""


class TaskJob(CommandJob):
    """Everything about one run of a task on volume nodes, from temporary files to imported nodes."""

    def __init__(
        self,
        scene: slicer.vtkMRMLScene,
        task: TaskSpec,
        input_volume_nodes: Sequence[slicer.vtkMRMLScalarVolumeNode],
        engine: str = "auto",
        model_id: str | None = None,
        device: str = "auto",
        options: dict[str, Any] | None = None,
        output_segmentation_node: slicer.vtkMRMLSegmentationNode | None = None,
        overwrite: bool = False,
        closed_surface: bool = False,
        work_dir: str | Path | None = None,
        runner_factory: RunnerFactory = clinseg_runner,
    ) -> None:
        super().__init__([], runner_factory)
        nodes = input_nodes(input_volume_nodes)
        if output_segmentation_node is not None and not overwrite:
            count = output_segmentation_node.GetSegmentation().GetNumberOfSegments()
            if count:  # refuse now, not after minutes of inference
                raise InputError(output_segmentation_node.GetName(),
                                 f"already holds {count} segment(s); choose another output or allow overwriting")
        self.scene, self.task, self.input_volume_nodes = scene, task, nodes
        self.engine, self.model_id, self.device, self.options = engine, model_id, device, dict(options or {})
        self.request = ImportRequest(nodes[0], output_segmentation_node, overwrite, closed_surface)
        task_arguments(task, ["in"], "out", engine, model_id, device, self._file_options(None))  # validate now
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.nodes: dict[str, Any] | None = None

    @property
    def out_dir(self) -> Path:
        if self.work_dir is None:
            raise RuntimeError("call prepare() first")
        return self.work_dir / OUTPUT_NAME

    def prepare(self) -> list[str]:
        """Write the input volumes (world geometry, LPS) to the work folder; return the CLI arguments."""
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix=f"ClinicalSeg-{self.task.name}-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        paths = [write_volume(volume_from_volume_node(node), self.work_dir / f"input{n}{self.task.input_suffix}")
                 for n, node in enumerate(self.input_volume_nodes)]
        return task_arguments(self.task, paths, self.out_dir, self.engine, self.model_id, self.device,
                              self._file_options(self.work_dir))

    def _file_options(self, folder: Path | None) -> dict[str, Any]:
        """The options with each node (e.g. a drawn GTV segmentation) replaced by the file it is written to in
        ``folder`` (segmentations on the first input's grid); ``None``: the file names only, to validate."""
        options = {}
        for key, value in self.options.items():
            if isinstance(value, (slicer.vtkMRMLSegmentationNode, slicer.vtkMRMLScalarVolumeNode)):
                path = Path(folder or ".") / f"{key}.nrrd"
                if folder is not None:
                    write_volume(self._option_volume(value), path)
                value = path
            options[key] = value
        return options

    def _option_volume(self, node: Any):
        if isinstance(node, slicer.vtkMRMLScalarVolumeNode):
            return volume_from_volume_node(node)
        reference = volume_from_volume_node(self.input_volume_nodes[0])
        return labelmap_from_segmentation_node(node, reference=reference)[0]

    def outcome(self, result_event: dict | None) -> dict[str, Any]:
        """Import the finished run's folder (``result_event["out"]`` when given) into the scene."""
        folder = Path(result_event["out"]) if result_event and result_event.get("out") else self.out_dir
        if not folder.is_dir():
            raise RunError(f"the run ended without writing its output folder {folder}")
        result = read_result(folder)
        hook = self.task.import_result
        self.nodes = (hook(self.scene, result, self.request) if hook is not None
                      else import_result(self.scene, result, self.task.layout, self.request))
        return self.nodes

    def cleanup(self) -> None:
        """Delete the temporary work folder (the nodes hold the results); a folder given by the caller stays."""
        if self._own_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
