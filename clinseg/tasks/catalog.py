"""The tasks a batch can run, as data: one ``TaskEntry`` per task name.

An entry says which volumes a case must provide, which options the task takes (with their defaults, so that a
manifest can hash the full option set), how to run the task on one case and how to render its preview PNGs.
Pipelines are imported only when an entry is used, so listing the catalog stays cheap. A new task adds one
``_entry_<task>`` function and one line in ``_BUILDERS``.
"""

from __future__ import annotations

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

    ``inputs`` names the volumes a case provides (the first is the one a single-image case fills);
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

    def options(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The defaults updated with ``given``; an unknown option name is refused (a typo would be hashed)."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise InputError(f"{self.name} options", f"unknown option(s) {', '.join(unknown)} (known: {known})")
        return {**self.defaults, **given}


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
    return TaskEntry(
        "airway", ("ct",),
        {"engine": "auto", "model_id": None, "device": "auto", "target_lps": None, "scope_diameter_mm": None},
        _airway_run, _airway_preview, ("preview.png", "tree3d.png"),
        "airway tree and centerlines from a chest CT",
    )


# Task name -> a builder of its entry; a task is listed only once its pipeline ships.
_BUILDERS: dict[str, Callable[[], TaskEntry]] = {"airway": _entry_airway}


def task_names() -> list[str]:
    return list(_BUILDERS)


def get_task(name: str) -> TaskEntry:
    try:
        return _BUILDERS[name]()
    except KeyError:
        raise InputError("task", f"unknown task '{name}' (available: {', '.join(_BUILDERS)})") from None


def parse_tasks(text: str) -> list[TaskEntry]:
    """``"airway,nodule"`` -> their entries in order; a name given twice is refused (one output folder each)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError("--tasks", "no task given")
    if len(set(names)) != len(names):
        raise InputError("--tasks", f"a task is named twice in '{text}'")
    return [get_task(n) for n in names]
