"""Small helpers shared by the module widgets and logics: device choice, availability messages, enabling.

Kept free of top-level Qt/Slicer imports so the pure parts are tested outside Slicer; the helpers that
touch widgets only set plain properties (``enabled``, ``text``, ``toolTip``) that PythonQt exposes.
"""

from __future__ import annotations

from collections.abc import Iterable

# Device selector items (what the parameter node stores) -> value of the CLI's ``--device`` option.
DEVICE_CHOICES: dict[str, str] = {"Auto": "auto", "CPU": "cpu", "GPU": "cuda"}
DEFAULT_DEVICE = "Auto"


class PipelineUnavailableError(RuntimeError):
    """The task's pipeline is not part of this version of the extension."""

    def __init__(self, task: str) -> None:
        self.task = task
        super().__init__(pipeline_unavailable_message(task))


def pipeline_unavailable_message(task: str) -> str:
    """The one sentence shown by a module whose pipeline is not shipped yet."""
    return f"{task} pipeline not available yet in this version."


def setWidgetsEnabled(widgets: Iterable, enabled: bool, toolTip: str | None = None) -> None:
    """Enable or disable several widgets at once, optionally saying why in their tooltip."""
    for widget in widgets:
        if widget is None:
            continue
        widget.enabled = enabled
        if toolTip is not None:
            widget.toolTip = toolTip


def showPipelineUnavailable(task: str, statusLabel, applyButton, otherWidgets: Iterable = ()) -> None:
    """Say plainly that the pipeline is missing and disable everything that would run it."""
    message = pipeline_unavailable_message(task)
    if statusLabel is not None:
        statusLabel.text = message
    setWidgetsEnabled([applyButton, *otherWidgets], False, toolTip=message)

