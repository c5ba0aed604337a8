"""Stage-1 OAR training recipe: cache re-spacing, CE + soft Dice loss, BatchNorm cascade, card kwargs."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from clinseg.nets.oar_unet import OARCascade
from clinseg.train.oar import (
    N_CLASSES,
    OarTrainConfig,
    PreparedCase,
    Stage1Task,
    _points,
    cascade_kwargs,
    multiclass_soft_dice,
    respace_prepared,
    run_training,
)


def _case(name: str, seed: int) -> PreparedCase:
    """A 24 x 32 x 32 box: body, a large organ (brain, 1) and a small one (lens L, 8)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((24, 32, 32), np.uint8)
    labels[4:16, 6:26, 6:26] = 1
    labels[18:21, 10:13, 10:13] = 8
    image = (0.4 + 0.1 * labels + 0.02 * rng.standard_normal(labels.shape)).astype(np.float32)
    return PreparedCase(name, image, labels, _points(labels, rng), {})


def test_respace_keeps_labels_and_scales_the_grid():
    case = _case("a", 0)
    coarse = respace_prepared(case, (2.0, 2.0, 3.0), (4.0, 4.0, 6.0))
    assert coarse.image.shape == (12, 16, 16) and coarse.labels.shape == (12, 16, 16)
    assert set(np.unique(coarse.labels)) <= {0, 1, 8} and 1 in coarse.labels
    # Brain volume in mm^3 is kept to within a coarse voxel layer.
    fine_ml, coarse_ml = (case.labels == 1).sum() * 12.0, (coarse.labels == 1).sum() * 96.0
    assert abs(coarse_ml - fine_ml) / fine_ml < 0.3
    for value, pts in coarse.organ_points.items():
        assert (coarse.labels[tuple(pts.T)] == value).all()


def test_ce_loss_adds_the_soft_dice_term():
    config = OarTrainConfig(loss="ce", dice_weight=0.5)
    task = Stage1Task([_case("a", 0)], [], config)
    logits = torch.randn(2, N_CLASSES, 8, 8, 8)
    target = torch.randint(0, N_CLASSES, (2, 1, 8, 8, 8))
    loss, _ = task.loss(logits, target)
    expected = F.cross_entropy(logits, target[:, 0]) + 0.5 * multiclass_soft_dice(logits, target[:, 0])
    assert torch.allclose(loss, expected)


def test_batch_norm_travels_through_the_cascade_kwargs():
    config = OarTrainConfig(width=2, stage2_width=2, norm="batch")
    stage1, stage2 = cascade_kwargs(config, ["lens_l"])
    assert stage1["norm"] == "batch" and stage2["lens_l"]["norm"] == "batch"
    cascade = OARCascade(stage1, stage2)
    assert any(k.startswith("stage1.norms.") for k in cascade.state_dict())
    assert "norm" not in cascade_kwargs(OarTrainConfig(), [])[0]  # the document's plain network stays as it was


def test_short_run_trains_a_batch_norm_cascade(tmp_path):
    torch.manual_seed(0)
    config = OarTrainConfig(width=2, patch=(16, 32, 32), batch=2, iters_per_epoch=4, norm="batch", loss="ce",
                            dice_weight=1.0, augment=False, stage2_organs=())
    cases = [_case("a", 0), _case("b", 1)]
    result = run_training(cases, [_case("v", 2)], tmp_path, config, epochs=2, stage2_epochs=0,
                          device=torch.device("cpu"), lr=3e-3, amp=False, log=lambda _: None)
    assert result.stage1.epochs_done == 2 and len(result.stage1.rows) == 2
    assert all(np.isfinite(float(r["train_loss"])) for r in result.stage1.rows)
    assert set(result.val_dice) == {"Brain", "Lens L"} and all(0.0 <= d <= 1.0 for d in result.val_dice.values())
    assert any(k.startswith("stage1.norms.") for k in result.cascade.state_dict())
