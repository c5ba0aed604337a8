"""Lesion metrics (ISLES'22 lesion F1, AVD, count difference), per-case metrics, DSC(G) and ``eval lesion``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clinseg.cli import main
from clinseg.io import write_volume
from clinseg.metrics.lesion import (
    absolute_volume_difference,
    aggregate_cases,
    case_metrics,
    lesion_count_difference,
    lesion_counts,
    lesion_f1,
)
from clinseg.volume import Volume

SPACING = (1.0, 1.0, 2.0)  # (i, j, k) mm: a voxel is 2 mm^3 = 0.002 ml
SHAPE = (20, 30, 30)


def hand_built() -> tuple[np.ndarray, np.ndarray]:
    """Four reference lesions (one made of two corner-touching voxels), three hit, one missed, two false blobs."""
    gt = np.zeros(SHAPE, bool)
    pred = np.zeros(SHAPE, bool)
    gt[2:6, 2:6, 2:6] = True  # L1, 64 voxels
    gt[2:6, 15:18, 15:18] = True  # L2, 36
    gt[12:14, 20:22, 20:22] = True  # L3, 8: missed
    gt[16, 2, 2] = gt[17, 3, 3] = True  # L4, 2 voxels joined only through a corner (26-connected)
    pred[3:6, 2:6, 2:6] = True  # inside L1, 48
    pred[3, 16, 16] = True  # one voxel of L2 is enough to detect it
    pred[17, 3, 3] = True  # detects L4
    pred[10:12, 2:4, 2:4] = True  # false positive, 8
    pred[18, 25, 25] = True  # false positive, 1
    return pred, gt


def test_lesion_wise_counts_f1_avd_and_count_difference():
    pred, gt = hand_built()
    assert lesion_counts(pred, gt) == {"lesion_tp": 3, "lesion_fp": 2, "lesion_fn": 1, "n_pred": 5, "n_gt": 4}
    assert lesion_f1(pred, gt) == pytest.approx(3 / (3 + (2 + 1) / 2))
    assert lesion_count_difference(pred, gt) == 1
    assert absolute_volume_difference(pred, gt, SPACING) == pytest.approx((110 - 59) * 0.002)
    # With 6-connectivity L4 splits into two lesions, one of them missed.
    assert lesion_counts(pred, gt, connectivity=6)["lesion_fn"] == 2


def test_one_prediction_bridging_two_lesions_detects_both():
    gt = np.zeros(SHAPE, bool)
    gt[5:8, 5:8, 5:8] = gt[5:8, 5:8, 10:13] = True
    pred = np.zeros(SHAPE, bool)
    pred[6, 6, 5:13] = True
    assert lesion_counts(pred, gt) == {"lesion_tp": 2, "lesion_fp": 0, "lesion_fn": 0, "n_pred": 1, "n_gt": 2}
    assert lesion_f1(pred, gt) == 1.0
    assert lesion_count_difference(pred, gt) == 1


def test_case_metrics_by_hand():
    pred, gt = hand_built()
    m = case_metrics(pred, gt, SPACING)
    tp, fp, fn = 50, 9, 60
    assert (m["tp"], m["fp"], m["fn"]) == (tp, fp, fn)
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["jaccard"] == pytest.approx(tp / (tp + fp + fn))
    assert m["jaccard"] == pytest.approx(m["dice"] / (2 - m["dice"]))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["lesion_f1"] == pytest.approx(2 / 3)
    assert m["avd_ml"] == pytest.approx(0.102)
    assert m["count_diff"] == 1
    assert (m["gt_ml"], m["pred_ml"]) == (pytest.approx(0.22), pytest.approx(0.118))
    assert 0 < m["asd_mm"] < m["hd95_mm"] < float("inf")
    # Spacing from a Volume; the prediction may be a plain array on the same grid.
    assert case_metrics(pred, Volume(gt.astype(np.uint8), SPACING)) == m


def test_global_dice_pools_counts_unlike_the_mean():
    big_gt = np.zeros(SHAPE, bool)
    big_gt[0:4, 0:5, 0:5] = True  # 100 voxels, half predicted
    big_pred = np.zeros(SHAPE, bool)
    big_pred[0:2, 0:5, 0:5] = True
    small_gt = np.zeros(SHAPE, bool)
    small_gt[10, 10, 0:10] = True  # 10 voxels, prediction beside it
    small_pred = np.zeros(SHAPE, bool)
    small_pred[10, 12, 0:10] = True
    cases = [case_metrics(big_pred, big_gt, SPACING), case_metrics(small_pred, small_gt, SPACING)]
    assert [c["dice"] for c in cases] == pytest.approx([100 / 150, 0.0])
    summary = aggregate_cases(cases)
    assert summary["dice"]["mean"] == pytest.approx(1 / 3)
    assert summary["dice"]["std"] == pytest.approx(1 / 3)  # population sd of (2/3, 0)
    # Pooled: TP 50, FP 0 + 10, FN 50 + 10.
    assert summary["dsc_global"] == pytest.approx(100 / 170)
    assert summary["n_cases"] == 2


def test_empty_cases():
    empty = np.zeros(SHAPE, bool)
    both = case_metrics(empty, empty, SPACING)
    assert {k: both[k] for k in ("dice", "recall", "precision", "jaccard", "lesion_f1")} == dict.fromkeys(
        ("dice", "recall", "precision", "jaccard", "lesion_f1"), 1.0)
    assert both["asd_mm"] == both["hd95_mm"] == both["avd_ml"] == 0.0 and both["count_diff"] == 0
    _, gt = hand_built()
    missed = case_metrics(empty, gt, SPACING)
    assert missed["dice"] == missed["recall"] == missed["precision"] == missed["lesion_f1"] == 0.0
    assert missed["hd95_mm"] == missed["asd_mm"] == float("inf")
    assert missed["count_diff"] == 4 and missed["avd_ml"] == pytest.approx(0.22)
    summary = aggregate_cases([both, missed])
    assert summary["hd95_mm"] == {"mean": 0.0, "std": 0.0, "n": 1, "n_undefined": 1}
    assert summary["dice"]["mean"] == 0.5
    assert summary["dsc_global"] == 0.0
    with pytest.raises(ValueError):
        aggregate_cases([])


def test_cli_eval_lesion_folders(tmp_path, capsys):
    pred, gt = hand_built()
    for sub in ("pred", "gt"):
        (tmp_path / sub).mkdir()
    for name, (p, g) in {"a.nii.gz": (pred, gt), "b.nii.gz": (gt, gt)}.items():
        write_volume(Volume(p.astype(np.uint8), SPACING), tmp_path / "pred" / name)
        write_volume(Volume(g.astype(np.uint8), SPACING), tmp_path / "gt" / name)
    folders = [str(tmp_path / "pred"), str(tmp_path / "gt")]
    assert main(["eval", "lesion", *folders, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cases"]["a.nii.gz"]["lesion_f1"] == pytest.approx(2 / 3)
    assert out["cases"]["b.nii.gz"]["dice"] == 1.0
    assert out["aggregate"]["dsc_global"] == pytest.approx(2 * (50 + 110) / (2 * 160 + 9 + 60))
    assert main(["eval", "lesion", *folders]) == 0
    text = capsys.readouterr().out
    assert "DSC(G) (pooled over 2 cases): 0.8226" in text
    assert text.splitlines()[0].split() == ["case", "dice", "recall", "precision", "jaccard", "asd_mm", "hd95_mm",
                                            "lesion_f1", "avd_ml", "count_diff"]
