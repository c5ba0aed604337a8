"""The shared loop's opt-in task options (``clinseg.train.loop``): a task's own ``forward`` and milestones reached
by time (``LoopConfig.time_milestones``). The default path is covered by ``test_train.py``."""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from clinseg.train import loop


class Clock:
    """A fake ``time`` module for the loop: each training batch takes ``step_s`` seconds."""

    def __init__(self, step_s: float) -> None:
        self.now, self.step_s = 0.0, step_s

    def monotonic(self) -> float:
        return self.now


class ToyTask:
    def __init__(self, clock: Clock, per_epoch: int = 2, own_forward: bool = False) -> None:
        self.clock, self.per_epoch, self.forward_calls = clock, per_epoch, 0
        if own_forward:
            self.forward = self._forward

    def batches(self, epoch, device):
        generator = torch.Generator().manual_seed(epoch)
        for _ in range(self.per_epoch):
            self.clock.now += self.clock.step_s
            image = torch.rand((2, 1, 4, 4, 4), generator=generator)
            yield image, (image > 0.5).float()

    def _forward(self, model, image):
        self.forward_calls += 1
        return model(image), model(image)  # two outputs, as a recurrent network's passes

    def loss(self, output, label):
        outputs = output if isinstance(output, tuple) else (output,)
        loss = sum(F.binary_cross_entropy_with_logits(o, label) for o in outputs) / len(outputs)
        return loss, outputs[-1]

    def validate(self, model, epoch, device):
        return None

    def metadata(self):
        return {}


def _run(tmp_path, monkeypatch, clock: Clock, task: ToyTask, **options) -> loop.TrainSummary:
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    torch.manual_seed(0)
    config = loop.LoopConfig(tmp_path, 20, lr=1e-3, milestones=(0.8,), amp=False, log=lambda line: None, **options)
    return loop.train(torch.nn.Conv3d(1, 1, 1), task, config)


def test_time_milestone_drops_the_rate_only_when_asked(tmp_path, monkeypatch):
    # 7 s a batch, 2 a epoch, 1 min budget: epochs start at 0, 14, 28, 42, 56 s; 80 % of the budget is 48 s;
    # the batch ending at 63 s passes the budget, so epoch 5 stops after one batch.
    clock = Clock(7.0)
    summary = _run(tmp_path / "timed", monkeypatch, clock, ToyTask(clock), max_minutes=1.0,
                   time_milestones=True)
    assert summary.stopped_early and summary.epochs_done == 5
    assert [r["lr"] for r in summary.rows] == ["0.001"] * 4 + ["0.0001"]
    assert [r["iterations"] for r in summary.rows] == ["2", "2", "2", "2", "1"]

    clock = Clock(7.0)
    plain = _run(tmp_path / "plain", monkeypatch, clock, ToyTask(clock), max_minutes=1.0)
    assert plain.epochs_done == 5 and [r["lr"] for r in plain.rows] == ["0.001"] * 5  # epoch milestone is 16


def test_time_drop_survives_a_resume(tmp_path, monkeypatch):
    clock = Clock(7.0)
    first = _run(tmp_path, monkeypatch, clock, ToyTask(clock), max_minutes=1.0, time_milestones=True)
    assert first.rows[-1]["lr"] == "0.0001"
    clock = Clock(7.0)  # a fresh budget: no time milestone reached yet in the resumed run
    resumed = _run(tmp_path, monkeypatch, clock, ToyTask(clock), max_minutes=1.0, time_milestones=True, resume=True)
    assert [r["epoch"] for r in resumed.rows][:6] == ["1", "2", "3", "4", "5", "6"]
    assert all(r["lr"] == "0.0001" for r in resumed.rows[4:])


def test_task_forward_is_used_and_keeps_the_weight_names(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    clock = Clock(0.0)
    task = ToyTask(clock, own_forward=True)
    summary = _run(tmp_path, monkeypatch, clock, task)
    assert summary.epochs_done == 20 and task.forward_calls == 40
    assert set(load_file(str(summary.weights))) == {"weight", "bias"}
