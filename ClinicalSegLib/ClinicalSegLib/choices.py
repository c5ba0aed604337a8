"""Engine and model choices of a task's model selector, with the card facts a user needs before trusting one.

Each choice says what runs (``auto``, ``classical`` where the task has a weights-free engine, or one
registered model of the task), whether it is ready (weights installed) and a short summary of its card:
training data (real or synthetic), licence, size and the figures measured for it. Pure Python over
``clinseg.registry``, which is imported only when asked (it needs torch, which Slicer may not have yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clinseg.errors import InputError

from .task import TaskSpec

if TYPE_CHECKING:
    from clinseg.registry import ModelCard, Registry


@dataclass(frozen=True)
class EngineChoice:
    """One item of the model selector."""

    key: str  # "auto", "classical" or "model:<id>"
    label: str
    engine: str  # the CLI's --engine
    model_id: str | None
    installed: bool
    summary: str

    def arguments(self) -> list[str]:
        """``--engine`` (and ``--model``) options for this choice."""
        args = ["--engine", self.engine]
        if self.model_id:
            args += ["--model", self.model_id]
        return args


def _plain(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _figure_text(figures: dict, limit: int = 4) -> str:
    """``{"dice": 0.91, "test_set": "..."}`` -> ``"dice 0.91, test_set ..."`` (nested dicts flattened one level)."""
    parts = []
    for key, value in figures.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} {_plain(v)}" for k, v in value.items() if not isinstance(v, dict | list))
            parts.append(f"{key}: {inner}" if inner else str(key))
        elif not isinstance(value, list):
            parts.append(f"{key} {_plain(value)}")
        if len(parts) == limit:
            break
    return "; ".join(parts)


def card_summary(card: ModelCard, installed: bool) -> str:
    """Three short lines: model and training data; licence and size; measured figures and install state."""
    training = card.data["training_data"]
    origin = "synthetic data only" if card.synthetic else "real data"
    figures = _figure_text(card.figures) or "none measured yet"
    state = "installed" if installed else "not installed (Install downloads it, Import takes a local file)"
    return (f"{card.id} {card.version}: trained on {origin}: {training['description']}\n"
            f"Licence {card.licence}; {card.parameter_count:,} parameters.\n"
            f"Measured: {figures}. {state[0].upper()}{state[1:]}.")


def _auto_summary(task: TaskSpec, default: EngineChoice | None) -> str:
    fallback = "the classical engine" if "classical" in task.engines else "no engine"
    if default is None:
        if "classical" in task.engines:
            return "Auto: the classical engine (no model has beaten it on our held-out comparison yet)."
        return "Auto: the task's default model once one is installed."
    if default.installed:
        return f"Auto: uses {default.model_id} (installed), else {fallback}."
    return f"Auto: uses {default.model_id} when it is installed; it is not yet."


def basic_choices(task: TaskSpec, auto_summary: str | None = None) -> list[EngineChoice]:
    """Auto (and classical where the task has it): what the selector offers before the registry is available."""
    choices = [EngineChoice("auto", "Auto", "auto", None, True, auto_summary or _auto_summary(task, None))]
    if "classical" in task.engines:
        choices.append(EngineChoice("classical", "Classical (no model)", "classical", None, True,
                                    task.classical_summary))
    return choices


def engine_choices(task: TaskSpec, registry: Registry | None = None) -> list[EngineChoice]:
    """Auto, classical (if any), then every registered model of the task (installed or not), sorted by id."""
    from clinseg.registry import get_registry

    registry = registry or get_registry()
    models = []
    for card in registry.list():
        if card.task == task.name:
            installed = registry.is_installed(card.id)
            label = card.id if installed else f"{card.id} (not installed)"
            models.append(EngineChoice(f"model:{card.id}", label, "model", card.id, installed,
                                       card_summary(card, installed)))
    default_id = task.default_model()
    default = next((m for m in models if m.model_id == default_id), None)
    return [*basic_choices(task, _auto_summary(task, default)), *models]


def choice_for(key: str, choices: list[EngineChoice]) -> EngineChoice:
    """The choice with ``key``; also accepts an engine name or a bare model id."""
    for choice in choices:
        if key in (choice.key, choice.model_id) or (choice.model_id is None and key == choice.engine):
            return choice
    raise InputError("model", f"unknown engine or model '{key}' (choose from {', '.join(c.key for c in choices)})")


def resolve(task: TaskSpec, engine: str = "auto", model_id: str | None = None,
            registry: Registry | None = None) -> EngineChoice:
    """The choice for the logic's ``engine``/``modelId`` arguments; a chosen model must be installed."""
    if engine not in task.engines:
        raise InputError("engine", f"unknown engine '{engine}' (choose from {', '.join(task.engines)})")
    choices = engine_choices(task, registry)
    if not model_id:
        if engine == "model":
            raise InputError("engine", "engine 'model' needs a model id")
        return choice_for(engine, choices)
    choice = choice_for(model_id, choices)
    if not choice.installed:
        raise InputError(choice.model_id or "model", "is not installed: install or import its weights first")
    return choice


def install_arguments(model_id: str) -> list[str]:
    """``clinseg models install <id>``: run in the background, since it downloads."""
    return ["models", "install", model_id]


def import_model_file(path: str | Path, registry: Registry | None = None) -> ModelCard:
    """Install a local weight file or model pack (identified by its SHA-256); quick, so done in-process."""
    from clinseg.registry import get_registry

    return (registry or get_registry()).import_file(path)
