"""A stage-2 op with ``blend: stage1_prob`` paints the mean of its model's and stage 1's probabilities."""

from types import SimpleNamespace

import numpy as np
import torch

from clinseg.tasks.oar.model import _stage2
from clinseg.volume import Volume


class _Constant(torch.nn.Module):
    """A binary 'model' whose organ probability is ``p`` everywhere."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.logit = float(np.log(p / (1 - p)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros((x.shape[0], 1, *x.shape[2:]))
        return torch.cat([zeros, zeros + self.logit], 1)


def _run(blend: bool) -> np.ndarray:
    ct = Volume(np.zeros((20, 20, 20), np.int16), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    labels = np.zeros(ct.shape, np.uint8)
    labels[8:12, 8:12, 8:12] = 2  # stage 1's organ: the crop is centred on it
    stage1 = np.zeros(ct.shape, np.float32)
    stage1[6:14, 6:14, 6:14] = 0.8  # stage 1 is sure over a larger box
    op = {"op": "stage2", "organ": "Brainstem", "key": "brainstem", "label": 2, "spacing": [2.0, 2.0, 2.0],
          "patch": [16, 16, 16], **({"blend": "stage1_prob"} if blend else {})}
    network = SimpleNamespace(stage2={"brainstem": _Constant(0.4).eval()})
    card = SimpleNamespace(inputs={"intensity": {"clip": [-100, 200]}})
    found = _stage2(ct, labels, network, op, card, torch.device("cpu"), {}, ct.with_array(stage1))
    return labels if found else np.zeros_like(labels)


def test_blend_takes_the_mean_with_stage_1():
    assert not _run(blend=False).any()  # the model alone (0.4) finds nothing: stage 1's mask would stay
    blended = _run(blend=True) == 2  # (0.4 + 0.8) / 2 = 0.6 inside stage 1's sure box, 0.2 outside it
    assert blended[7:13, 7:13, 7:13].all() and blended.sum() < 9**3
