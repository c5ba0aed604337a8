"""Which engine a task run uses: one rule for every task's ``--engine`` / ``--model``.

``classical`` needs no weights. ``model`` (or any ``--model``) needs a registered, installed model of the task.
``auto`` runs the task's default model when it is installed, else the classical engine; a task without a
classical engine needs its default model installed.
"""

from __future__ import annotations

from ..errors import InputError


def resolve_engine(task: str, engine: str, model_id: str | None, default_model: str | None,
                   engines: tuple[str, ...] = ("auto", "model", "classical")) -> tuple[str, str | None]:
    """``("classical", None)`` or ``("model", model_id)``; a one-line ``InputError`` for anything else."""
    if engine == "classical" and "classical" not in engines:
        raise InputError("engine", f"the {task} task has no 'classical' engine: it needs its network (model)")
    if engine not in engines:
        raise InputError("engine", f"unknown engine '{engine}' (use {', '.join(engines)})")
    if engine == "classical":
        return "classical", None
    from ..registry import get_registry

    registry = get_registry()
    chosen = model_id or default_model
    if engine == "model" or model_id or "classical" not in engines:
        if chosen is None:
            raise InputError("engine", "engine 'model' needs a model id (--model); see 'clinseg models list'")
        card = registry.card(chosen)  # unknown id: a clear error naming the known ones
        if card.task != task:
            raise InputError(chosen, f"is a {card.task} model, not a {task} model")
        if not registry.is_installed(chosen):
            raise InputError(chosen, f"model is not installed (run: clinseg models install {chosen})")
        return "model", chosen
    return ("model", chosen) if chosen and registry.is_installed(chosen) else ("classical", None)
