"""A generic supervised training loop: Adam, step learning-rate schedule, mixed precision on CUDA,
a checkpoint every epoch, exact resume, a CSV log and a final safetensors export.

The task supplies the data and the loss through the ``TrainTask`` protocol; every random choice of a task
should derive from ``(seed, epoch)`` so that a resumed run repeats an uninterrupted one.

Run folder layout::

    checkpoints/last.pt        model, optimiser, scaler, completed epochs, RNG states (every epoch)
    checkpoints/epoch_NNN.pt   kept copies every ``keep_every`` epochs (optional)
    log.csv                    one row per epoch
    model.safetensors          final weights (+ the task's metadata)
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io.atomic import atomic_write
from .losses import hard_dice_counts

# The thesis divides the learning rate by 10 at epochs 11, 21 and 41 of 60 (1-based).
THESIS_MILESTONES = (10 / 60, 20 / 60, 40 / 60)
LOG_FIELDS = ["epoch", "lr", "iterations", "train_loss", "train_dice", "val_dice", "seconds"]


class TrainTask(Protocol):
    """What the loop needs from a task.

    Optional: ``forward(model, image)`` returns what ``loss`` gets, for a task whose loss needs more than
    ``model(image)`` (every recurrent pass, say) without wrapping the network, which would rename its weights.
    Without it the loop calls ``model(image)``.
    """

    def batches(self, epoch: int, device: torch.device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """Image and label batches of one epoch, on ``device``. Channel 0 of a label batch is the label; a
        task may add training-only targets as further channels (its ``loss`` reads them)."""

    def loss(self, output: Any, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` from the network output."""

    def validate(self, model: nn.Module, epoch: int, device: torch.device) -> float | None:
        """Validation Dice after ``epoch`` (0-based), or ``None`` when not validated this epoch."""

    def metadata(self) -> dict[str, str]:
        """Strings stored with the exported weights (network class, arguments, preprocessing)."""


@dataclass
class LoopConfig:
    out_dir: Path
    epochs: int
    lr: float = 3e-3
    milestones: tuple[float, ...] = THESIS_MILESTONES  # fractions of ``epochs``
    lr_factor: float = 0.1
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: bool = True  # float16 autocast on CUDA, bfloat16 on CPUs with native bfloat16 (about 2x faster steps)
    max_minutes: float | None = None
    resume: bool = False
    keep_every: int = 0
    # Opt-in: a milestone also counts as reached once that fraction of ``max_minutes`` has passed (checked at
    # each epoch start), so a run that the time budget ends early still gets its late low-rate epochs.
    time_milestones: bool = False
    log: Callable[[str], None] = print


@dataclass
class TrainSummary:
    epochs_done: int
    rows: list[dict[str, str]]
    weights: Path
    stopped_early: bool


def learning_rate(epoch: int, epochs: int, base: float, milestones=THESIS_MILESTONES, factor: float = 0.1,
                  min_drops: int = 0) -> float:
    """Step schedule: ``base`` times ``factor`` per milestone reached (milestone epoch = round(fraction *
    epochs), at least 1, so the first epoch always runs at ``base``), or per ``min_drops`` if more."""
    drops = sum(epoch >= max(1, round(f * epochs)) for f in milestones)
    return base * factor ** max(drops, min_drops)


def cosine_lr(lr: float, done: float) -> float:
    """The learning rate after the share ``done`` (0-1) of a run: ``lr`` down to 5 % of it along a half cosine."""
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(max(done, 0.0), 1.0))))


def follow_cosine(optimiser: torch.optim.Optimizer, lr: float, step: int, max_steps: int | None,
                  elapsed_minutes: float, minutes: float) -> None:
    """Set ``cosine_lr`` for a run's progress: by steps when ``max_steps`` bounds it, else by wall time."""
    done = step / max_steps if max_steps else elapsed_minutes / minutes
    for group in optimiser.param_groups:
        group["lr"] = cosine_lr(lr, done)


def time_drops(elapsed_minutes: float, max_minutes: float, milestones) -> int:
    """Milestones reached by time: fractions of ``max_minutes`` that ``elapsed_minutes`` has passed."""
    return sum(elapsed_minutes >= f * max_minutes for f in milestones)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_rest": [int(pos), int(has_gauss), float(cached)],
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, cached = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, epoch: int, model: nn.Module, optimizer, scaler) -> None:
    """Write ``epoch`` (completed epochs), weights, optimiser/scaler state and RNG states atomically."""
    state = {
        "epoch": int(epoch),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": _rng_state(),
    }
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, model: nn.Module, optimizer, scaler, device: torch.device) -> int:
    """Restore a ``save_checkpoint`` file; returns the number of completed epochs."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError) as error:
        raise InputError(path.name, f"cannot read checkpoint: {str(error).splitlines()[0]}") from None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    return int(state["epoch"])


def read_log(path: Path, upto: int) -> list[dict[str, str]]:
    """Rows of ``log.csv`` for epochs ``1..upto`` (later rows belong to a run that was not checkpointed)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["epoch"]) <= upto]


def write_log(path: Path, rows: list[dict[str, str]]) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def export_safetensors(model: nn.Module, path: Path, metadata: dict[str, str]) -> Path:
    """Save the weights (float32, contiguous, on the CPU) with string metadata, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    return path


def row_checkpointer(weights: Path, log_path: Path, network_name: str) -> Callable[[nn.Module, dict], None]:
    """A checkpoint callback for minute-bounded runs: exports the weights and rewrites ``log_path`` (CSV) with every
    history row so far, so that a run stopped at any point leaves matching weights and log."""
    rows: list[dict] = []

    def checkpoint(network: nn.Module, row: dict) -> None:
        export_safetensors(network, weights, {"network": network_name, "step": str(row["step"])})
        rows.append(row)
        with open(log_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[-1]))
            writer.writeheader()
            writer.writerows(rows)

    return checkpoint


def check_resumed_settings(settings_path: Path, settings: dict) -> None:
    """Refuse to resume a run whose ``run.json`` is missing or differs from ``settings``."""
    out = settings_path.parent
    if not settings_path.is_file():
        raise InputError(str(out), f"nothing to resume: {settings_path.name} is missing")
    previous = json.loads(settings_path.read_text())
    # Over both key sets: an option left out of run.json at its default must not be switched on or off.
    changed = sorted(k for k in settings.keys() | previous.keys() if previous.get(k) != settings.get(k))
    if changed:
        raise InputError(str(out), f"--resume with different settings ({', '.join(changed)}) than the run")


def autocast_precision(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype of training steps, or ``None`` for plain float32."""
    from ..engine import cpu_has_native_bf16

    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def finite_gradients(model: nn.Module) -> bool:
    """Whether every gradient of ``model`` is finite (a bfloat16 step can overflow where the loss did not)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


def as_float32(output: Any) -> Any:
    """``output`` (a tensor, or a tuple / named tuple of them, nested) with every tensor in float32."""
    if isinstance(output, torch.Tensor):
        return output.float()
    if isinstance(output, tuple):
        items = [as_float32(item) for item in output]
        return type(output)(*items) if hasattr(output, "_fields") else type(output)(items)
    return output


def train(model: nn.Module, task: TrainTask, config: LoopConfig) -> TrainSummary:
    """Train ``model`` for ``config.epochs`` epochs (continuing from ``checkpoints/last.pt`` with ``resume``)."""
    device = config.device
    out = Path(config.out_dir)
    checkpoint = out / "checkpoints" / "last.pt"
    log_path = out / "log.csv"
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
    use_amp = config.amp and device.type == "cuda"
    autocast_dtype = autocast_precision(device, config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    done = 0
    if config.resume:
        if not checkpoint.is_file():
            raise InputError(str(out), "nothing to resume: checkpoints/last.pt is missing")
        done = load_checkpoint(checkpoint, model, optimizer, scaler, device)
        config.log(f"resumed after epoch {done}")
    rows = read_log(log_path, done)
    timed = config.time_milestones and bool(config.max_minutes)
    # Drops already taken stay taken on resume: the restored optimiser holds the last epoch's rate.
    dropped = 0
    if timed and done and 0 < config.lr_factor < 1:
        dropped = round(math.log(optimizer.param_groups[0]["lr"] / config.lr, config.lr_factor))
    run_started = time.monotonic()
    deadline = run_started + 60 * config.max_minutes if config.max_minutes else math.inf
    forward = getattr(task, "forward", None)
    stopped = False
    for epoch in range(done, config.epochs):
        started = time.monotonic()
        if timed:
            dropped = max(dropped, time_drops((started - run_started) / 60, config.max_minutes, config.milestones))
        lr = learning_rate(epoch, config.epochs, config.lr, config.milestones, config.lr_factor, dropped)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(config.seed * 1_000_003 + epoch)  # any global-RNG use is tied to the epoch
        model.train()
        loss_sum, iterations, skipped, overlap, total = 0.0, 0, 0, 0.0, 0.0
        for image, label in task.batches(epoch, device):
            with autocast(device, autocast_dtype):
                output = model(image) if forward is None else forward(model, image)
            loss, logits = task.loss(as_float32(output), label)  # the Dice sums need float32
            if not torch.isfinite(loss):
                skipped += 1  # a diverging batch would poison Adam's moments; drop it and say so below
                optimizer.zero_grad(set_to_none=True)
                continue
            scaler.scale(loss).backward()
            if not use_amp and not finite_gradients(model):
                skipped += 1  # without a gradient scaler (float32, CPU bfloat16) nothing else would catch it
                optimizer.zero_grad(set_to_none=True)
                continue
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach())
            a, b = hard_dice_counts(logits, label[:, :1])
            overlap, total, iterations = overlap + a, total + b, iterations + 1
            if time.monotonic() > deadline:
                stopped = True
                break
        if skipped:
            config.log(f"epoch {epoch + 1}: skipped {skipped} batch(es) with a non-finite loss")
        if iterations == 0:
            raise RuntimeError(f"epoch {epoch + 1} ran no optimisation step (no batches, or every loss non-finite)")
        model.eval()
        with autocast(device, autocast_dtype):
            val = task.validate(model, epoch, device)
        row = {
            "epoch": str(epoch + 1),
            "lr": f"{lr:.3g}",
            "iterations": str(iterations),
            "train_loss": f"{loss_sum / iterations:.6f}",
            "train_dice": f"{overlap / total:.6f}" if total else "1.000000",
            "val_dice": "" if val is None else f"{val:.6f}",
            "seconds": f"{time.monotonic() - started:.1f}",
        }
        # Checkpoint first: a log row without its checkpoint is dropped on resume.
        save_checkpoint(checkpoint, epoch + 1, model, optimizer, scaler)
        if config.keep_every and (epoch + 1) % config.keep_every == 0:
            save_checkpoint(checkpoint.with_name(f"epoch_{epoch + 1:03d}.pt"), epoch + 1, model, optimizer, scaler)
        rows.append(row)
        write_log(log_path, rows)
        done = epoch + 1
        config.log(" ".join(f"{k}={v}" for k, v in row.items() if v != ""))
        if stopped:
            config.log(f"time budget of {config.max_minutes} min reached; stopped after epoch {done}")
            break
    weights = export_safetensors(model, out / "model.safetensors", {**task.metadata(), "epochs": str(done)})
    return TrainSummary(done, rows, weights, stopped)
