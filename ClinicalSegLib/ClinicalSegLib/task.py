"""What makes one ClinicalSeg module differ from another: its task, as data.

A module is a ``TaskSpec`` (the ``clinseg`` subcommand it runs, the engines it offers, how its own options
become command-line arguments, how its outputs are laid out as nodes) plus, where it needs one, an import
hook. Everything else (job, model selector, Apply/Cancel, overwrite checks, status line) is shared.
Pure Python: no Qt, no ``slicer`` import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinseg.errors import InputError

from .widgets import DEVICE_CHOICES

_DEVICE_PREFIXES = ("auto", "cpu", "cuda", "mps")


def no_arguments(options: dict[str, Any]) -> list[str]:
    """The arguments of a task that has no options of its own; an unknown option is an error, not ignored."""
    if options:
        raise InputError("options", f"this task takes no option {', '.join(sorted(options))}")
    return []


def no_default_model() -> str | None:
    return None


@dataclass(frozen=True)
class TaskSpec:
    """One task as the Slicer side sees it.

    ``arguments(options)`` turns the logic's task-specific keyword arguments (e.g. a route target) into
    ``clinseg <name>`` options, validating them before the run starts. ``import_result(scene, result, request)``
    turns the finished run's ``Result`` into nodes; ``None`` uses the shared importer with ``layout``.
    """

    name: str  # ``clinseg`` subcommand and registry task, e.g. "airway"
    title: str  # "Airway segmentation": dialogs, status line
    engines: tuple[str, ...] = ("auto", "model")  # values of the CLI's --engine; "classical" needs no weights
    classical_summary: str = ""
    default_model: Callable[[], str | None] = no_default_model  # a call: the registry may need torch
    arguments: Callable[[dict[str, Any]], list[str]] = no_arguments
    layout: Any = None  # ClinicalSegLib.mrml_result.ResultLayout; None: one folder of curves and tables
    import_result: Callable[..., dict[str, Any]] | None = None
    available: bool = True  # False while the task's pipeline is not shipped
    input_suffix: str = ".nrrd"


def device_option(device: str) -> str:
    """The CLI's ``--device`` for a selector item (``"GPU"`` -> ``"cuda"``) or a device string (``"cuda:1"``)."""
    if device in DEVICE_CHOICES:
        return DEVICE_CHOICES[device]
    text = str(device).strip().lower()
    name, _, index = text.partition(":")
    if name in _DEVICE_PREFIXES and (not index or (name == "cuda" and index.isdigit())):
        return text
    raise InputError("device", f"unknown device '{device}' (Auto, CPU, GPU, or auto, cpu, cuda, cuda:N, mps)")


def task_arguments(task: TaskSpec, input_paths: Sequence[str | Path], out_dir: str | Path, engine: str = "auto",
                   model_id: str | None = None, device: str = "auto",
                   options: dict[str, Any] | None = None) -> list[str]:
    """``clinseg <task> INPUT... -o OUT --engine E --device D --no-preview [--model M] <task options>``.

    ``--progress`` is added by the runner. No PNG preview: Slicer shows the results itself.
    """
    if engine not in task.engines:
        raise InputError("engine", f"unknown engine '{engine}' (choose from {', '.join(task.engines)})")
    args = [task.name, *map(str, input_paths), "-o", str(out_dir), "--engine", engine,
            "--device", device_option(device), "--no-preview"]
    if model_id:
        args += ["--model", model_id]
    return args + task.arguments(dict(options or {}))
