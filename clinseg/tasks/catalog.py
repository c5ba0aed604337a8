"""The tasks a batch can run, as data: one ``TaskEntry`` per task name.

An entry says which volumes a case must provide, which options the task takes (with their defaults, so that a
manifest can hash the full option set), how to run the task on one case and how to render its preview PNGs.
The defaults are the pipeline's own option dataclass, so batch and the pipeline cannot drift apart. Pipelines
are imported only when an entry is used, so listing the catalog stays cheap. A new task adds one
``_entry_<task>`` function and one line in ``_BUILDERS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback
from ..result import Result
from ..volume import Volume

Volumes = Mapping[str, Volume]
RunFn = Callable[[Volumes, Mapping[str, Any], ProgressCallback | None, CancelToken | None], Result]
PreviewFn = Callable[[Result, Path, Volumes], list[Path]]


@dataclass(frozen=True)
class TaskEntry:
    """How to run one task on one case.

    ``inputs`` names the volumes a case must provide (the first is the one a single-image case fills),
    ``optional_inputs`` those it may provide (a CSV column each);
    ``defaults`` lists every option the task accepts with its default value; ``run`` gets the case's volumes and
    the complete option dict; ``preview`` writes PNGs into the task's output folder and returns their paths
    (``montage`` picks the ones a QC montage shows, in order; empty: every PNG).
    """

    name: str
    inputs: tuple[str, ...]
    defaults: Mapping[str, Any]
    run: RunFn
    preview: PreviewFn | None = None
    montage: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""
    optional_inputs: tuple[str, ...] = ()

    def options(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The defaults updated with ``given``; an unknown option name is refused (a typo would be hashed)."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise InputError(f"{self.name} options", f"unknown option(s) {', '.join(unknown)} (known: {known})")
        return {**self.defaults, **given}


def option_defaults(options_class: type, per_case: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every field of a pipeline's options dataclass with its default, less the per-case inputs."""
    return {f.name: f.default for f in dataclasses.fields(options_class) if f.name not in per_case}


# --- airway ---------------------------------------------------------------------------------------------------
def _airway_run(volumes: Volumes, options: Mapping[str, Any], progress, cancel) -> Result:
    from .airway import AirwayOptions, run_airway

    target = options.get("target_lps")
    opts = AirwayOptions(options["engine"], options["model_id"], options["device"],
                         tuple(float(v) for v in target) if target is not None else None,
                         options["scope_diameter_mm"])
    return run_airway(volumes["ct"], opts, progress, cancel)


def _airway_preview(result: Result, folder: Path, volumes: Volumes) -> list[Path]:
    from .airway.preview import render_airway_preview

    return render_airway_preview(result, folder, volumes.get("ct"))


def _entry_airway() -> TaskEntry:
    from .airway import AirwayOptions

    return TaskEntry(
        "airway", ("ct",), option_defaults(AirwayOptions),
        _airway_run, _airway_preview, ("preview.png", "tree3d.png"),
        "airway tree and centerlines from a chest CT",
    )


# --- nodule ---------------------------------------------------------------------------------------------------
def _nodule_run(volumes: Volumes, options: Mapping[str, Any], progress, cancel) -> Result:
    from .nodule import NoduleOptions, run_nodule

    return run_nodule(volumes["ct"], NoduleOptions(**options), progress, cancel)


def _nodule_preview(result: Result, folder: Path, volumes: Volumes) -> list[Path]:
    from .nodule.preview import render_nodule_preview

    return render_nodule_preview(result, folder, volumes.get("ct"))


def _entry_nodule() -> TaskEntry:
    from .nodule import NoduleOptions

    return TaskEntry(
        "nodule", ("ct",), option_defaults(NoduleOptions),
        _nodule_run, _nodule_preview, ("preview.png",), "lung nodules, their sizes and types from a chest CT",
    )


# --- oar --------------------------------------------------------------------------------------------------------
def _oar_run(volumes: Volumes, options: Mapping[str, Any], progress, cancel) -> Result:
    from .oar import OarOptions, run_oar

    # The drawn GTV is a per-case input (a CSV column), not an option: it differs from case to case.
    return run_oar(volumes["ct"], OarOptions(gtv=volumes.get("gtv"), **options), progress, cancel)


def _oar_preview(result: Result, folder: Path, volumes: Volumes) -> list[Path]:
    from .oar.preview import render_oar_preview

    return render_oar_preview(result, folder, volumes.get("ct"))


def _entry_oar() -> TaskEntry:
    from .oar import OarOptions

    return TaskEntry(
        "oar", ("ct",), option_defaults(OarOptions, per_case=("gtv",)),
        _oar_run, _oar_preview, ("preview.png",), "head & neck organs at risk (and a CTV from a GTV)",
        optional_inputs=("gtv",),
    )


# --- stroke -----------------------------------------------------------------------------------------------------
_STROKE_SEQUENCES = ("dwi", "adc", "flair", "t1")


def _stroke_run(volumes: Volumes, options: Mapping[str, Any], progress, cancel) -> Result:
    from .stroke import StrokeOptions, run_stroke

    sequences = {name: volumes[name] for name in _STROKE_SEQUENCES if name in volumes}
    return run_stroke(sequences, StrokeOptions(**options), progress, cancel)


def _stroke_preview(result: Result, folder: Path, volumes: Volumes) -> list[Path]:
    from .stroke.preview import render_stroke_preview
    from .stroke.sequences import PRIMARY

    return render_stroke_preview(result, folder, volumes.get(PRIMARY.get(result.metrics.get("mode"), "")))


def _entry_stroke() -> TaskEntry:
    from .stroke import StrokeOptions

    # Which sequences a case needs depends on the mode (acute: DWI (+ADC, +FLAIR); chronic: T1): all optional.
    return TaskEntry(
        "stroke", (), option_defaults(StrokeOptions),
        _stroke_run, _stroke_preview, ("preview.png",), "ischaemic stroke lesions from brain MRI",
        optional_inputs=_STROKE_SEQUENCES,
    )


# Task name -> a builder of its entry (built on demand: each imports its own pipeline).
_BUILDERS: dict[str, Callable[[], TaskEntry]] = {
    "airway": _entry_airway, "nodule": _entry_nodule, "oar": _entry_oar, "stroke": _entry_stroke,
}


def task_names() -> list[str]:
    return list(_BUILDERS)


def get_task(name: str) -> TaskEntry:
    if name not in _BUILDERS:
        raise InputError("task", f"unknown task '{name}' (available: {', '.join(task_names())})")
    return _BUILDERS[name]()
def parse_tasks(text: str) -> list[TaskEntry]:
    """``"airway,nodule"`` -> their entries in order; a name given twice is refused (one output folder each)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError("--tasks", "no task given")
    if len(set(names)) != len(names):
        raise InputError("--tasks", f"a task is named twice in '{text}'")
    return [get_task(n) for n in names]
