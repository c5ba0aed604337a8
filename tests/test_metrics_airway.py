"""ATM'22 metrics on constructed cases, the eval CLI, and real top-5 team predictions (shared data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from test_post_tree import draw_tubes, grid

from clinseg.cli import main
from clinseg.errors import InputError
from clinseg.metrics.airway import AirwayReference, aggregate, airway_metrics, parse_branches
from clinseg.metrics.overlap import overlap_metrics

TRUNK = ((0, 0, 58), (0, 0, 34), 4.0)
LEFT = ((0, 0, 34), (16, 0, 14), 3.0)
RIGHT = ((0, 0, 34), (-16, 0, 14), 3.0)


def y_mask(*tubes) -> np.ndarray:
    return draw_tubes(grid((0.8, 0.8, 0.8), lo=(-24, -8, 6), hi=(24, 8, 62)), tubes or (TRUNK, LEFT, RIGHT)).array


def test_overlap_metrics_exact_counts():
    gt = np.zeros((10, 10, 10), bool)
    pred = np.zeros_like(gt)
    gt.flat[:8] = True  # 8 voxels
    pred.flat[2:12] = True  # 10 voxels, 6 shared
    m = overlap_metrics(pred, gt)
    assert m["dice"] == pytest.approx(12 / 18)
    assert m["precision"] == pytest.approx(0.6) and m["sensitivity"] == pytest.approx(0.75)
    assert m["fpr"] == pytest.approx(4 / (4 + 1000 - 12)) and m["fnr"] == pytest.approx(0.25)


def test_parse_branches_of_a_plus_sign():
    mask = np.zeros((3, 21, 21), bool)
    mask[1, 10, 1:20] = True
    mask[1, 1:20, 10] = True
    labels = parse_branches(np.argwhere(mask), mask.shape)
    counts = np.bincount(labels)
    assert len(counts) == 4 and counts.sum() == 37  # four arms; junction voxels joined to one of them
    assert counts.min() >= 9 and counts.max() <= 10


def test_identical_masks_score_one():
    gt = y_mask()
    m = airway_metrics(gt, gt)
    assert m["dice"] == m["td"] == m["bd"] == m["precision"] == m["sensitivity"] == 1.0
    assert m["fpr"] == 0.0 and m["fnr"] == 0.0 and m["gt_branches"] == 3


def test_missing_branch_and_leaks():
    gt = y_mask()
    ref = AirwayReference.from_mask(gt)
    n = ref.n_branches
    assert n == 3
    missing = y_mask(TRUNK, LEFT)  # the right branch is not segmented
    m = airway_metrics(missing, ref)
    assert m["bd"] == pytest.approx((n - 1) / n) and m["detected_branches"] == n - 1
    assert 0.5 < m["td"] < 0.9 and m["precision"] == 1.0 and m["fp"] == 0

    # a detached leak is not part of the largest component: ignored
    detached = gt.copy()
    detached[2:6, 2:6, 2:6] = 1
    m = airway_metrics(detached, ref)
    assert m["dice"] == 1.0 and m["pred_voxels_outside_largest"] == 64
    # an attached leak adds false positives but keeps TD/BD
    leak = y_mask(TRUNK, LEFT, RIGHT, ((0, 0, 45), (0, 7, 45), 2.5))
    m = airway_metrics(leak, ref, spacing=(0.8, 0.8, 0.8))
    extra = int(leak.sum() - gt.sum())
    assert m["fp"] == extra > 0 and m["precision"] == pytest.approx(gt.sum() / leak.sum())
    assert m["td"] == m["bd"] == 1.0 and m["fpr"] == pytest.approx(extra / (gt.size - gt.sum()))
    assert m["pred_volume_ml"] == pytest.approx(leak.sum() * 0.512 / 1000, abs=1e-3)


def test_shape_mismatch_and_empty_gt_raise():
    gt = y_mask()
    with pytest.raises(InputError, match="differs"):
        airway_metrics(gt[:-1], gt)
    with pytest.raises(InputError, match="empty"):
        airway_metrics(gt, np.zeros_like(gt))
    m = airway_metrics(np.zeros_like(gt), gt)
    assert m["dice"] == 0.0 and m["td"] == 0.0 and m["bd"] == 0.0


def test_aggregate_mean_std():
    agg = aggregate([{"dice": 0.8, "bd": 0.5, "name": "a"}, {"dice": 0.9, "bd": 0.7, "name": "b"}])
    assert set(agg) == {"dice", "bd"}
    assert agg["dice"]["mean"] == pytest.approx(0.85) and agg["dice"]["std"] == pytest.approx(0.05)


def _write(array: np.ndarray, path) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing((0.8, 0.8, 0.8))
    sitk.WriteImage(image, str(path))


def test_eval_cli_file_and_folder_modes(tmp_path, capsys):
    gt, pred = y_mask(), y_mask(TRUNK, LEFT)
    for folder, arrays in (("gt", (gt, gt)), ("pred", (gt, pred))):
        (tmp_path / folder).mkdir()
        for name, array in zip(("a.nii.gz", "b.nii.gz"), arrays):
            _write(array, tmp_path / folder / name)
    assert main(["eval", "airway", str(tmp_path / "pred" / "b.nii.gz"), str(tmp_path / "gt" / "b.nii.gz"),
                 "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["cases"]["b.nii.gz"]["bd"] == pytest.approx(2 / 3) and single["aggregate"] is None
    assert main(["eval", "airway", str(tmp_path / "pred"), str(tmp_path / "gt"), "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["aggregate"]["bd"]["mean"] == pytest.approx(5 / 6) and both["aggregate"]["dice"]["n"] == 2
    assert main(["eval", "airway", str(tmp_path / "pred"), str(tmp_path / "gt")]) == 0
    table = capsys.readouterr().out
    assert "mean" in table and "a.nii.gz" in table and "100.000" in table
    assert main(["eval", "airway", str(tmp_path / "pred"), str(tmp_path / "gt" / "a.nii.gz")]) == 2


@pytest.mark.parametrize("case", ["224", "305", "307"])
def test_real_teams_against_timi(shared, case):
    from clinseg.io import read_volume

    root = shared / "data" / "atm22_airways"
    if not (root / "timi" / f"ATM_{case}.nii.gz").exists():
        pytest.skip("ATM'22 team masks absent")
    gt = read_volume(root / "timi" / f"ATM_{case}.nii.gz").array
    ref = AirwayReference.from_mask(gt)
    assert 150 < ref.n_branches < 1500
    assert airway_metrics(gt, ref)["bd"] == 1.0
    for team in ("YangLab", "SanmedAI", "neu204", "deeptree_damo"):
        m = airway_metrics(read_volume(root / team / f"ATM_{case}.nii.gz").array, ref)
        assert m["dice"] > 0.85, team
        assert 0.6 < m["td"] < 1.0 and 0.5 < m["bd"] < 1.0, team
        assert m["fpr"] < 1e-3, team
