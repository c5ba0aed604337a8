"""Nodule detection metrics: hit matching, FROC, CPM, per-nodule Dice by type and size, and ``clinseg eval nodule``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clinseg.cli import main
from clinseg.errors import InputError
from clinseg.io import write_volume
from clinseg.io.tables import write_table
from clinseg.metrics.detection import (
    FP_RATES,
    Detection,
    ReferenceNodule,
    froc,
    ignoring_smaller,
    match_detections,
    nodule_overlaps,
    nodule_rows,
    nodule_summary,
    size_bin,
)
from clinseg.post.nodules import nodule_table
from clinseg.volume import Volume

NODULES = [
    ReferenceNodule("a", (0, 0, 0), 10.0, 1),
    ReferenceNodule("a", (50, 0, 0), 6.0, 2),
    ReferenceNodule("b", (0, 0, 0), 8.0, 1),
    ReferenceNodule("b", (30, 0, 0), 20.0, 2),
]


def test_perfect_detector_scores_cpm_one():
    detections = [Detection(n.case, n.center_lps, s) for n, s in zip(NODULES, (0.9, 0.2, 0.5, 0.7))]
    curve = froc(detections, NODULES, n_scans=3)  # the third scan has neither nodules nor detections
    assert curve.cpm() == 1.0 and np.all(curve.sensitivity_at() == 1.0)
    assert curve.fps_per_scan.max() == 0.0


def test_known_mix_gives_the_hand_computed_froc_and_cpm():
    detections = [
        Detection("a", (1, 0, 0), 0.9),  # TP nodule a1
        Detection("a", (20, 0, 0), 0.8),  # FP
        Detection("b", (0, 1, 0), 0.7),  # TP nodule b1
        Detection("a", (0, 2, 0), 0.65),  # duplicate of a1: neither TP nor FP
        Detection("b", (-20, 0, 0), 0.6),  # FP
        Detection("b", (-40, 0, 0), 0.5),  # FP
        Detection("a", (51, 0, 0), 0.4),  # TP nodule a2; nodule b2 is never found
    ]
    matching = match_detections(detections, NODULES)
    assert matching.outcome == ["tp", "fp", "tp", "duplicate", "fp", "fp", "tp"]
    curve = froc(detections, NODULES, n_scans=2, matching=matching)
    assert np.allclose(curve.fps_per_scan, [0, 0, 0.5, 0.5, 1.0, 1.5, 1.5])
    assert np.allclose(curve.sensitivity, [0, 0.25, 0.25, 0.5, 0.5, 0.5, 0.75])
    assert np.allclose(curve.sensitivity_at(), [0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75])
    assert curve.cpm() == pytest.approx(3.75 / 7)


def test_a_score_tie_of_a_hit_and_a_false_positive_interpolates_linearly():
    nodules = [ReferenceNodule("a", (0, 0, 0), 10.0), ReferenceNodule("a", (40, 0, 0), 10.0)]
    detections = [Detection("a", (90, 0, 0), 0.9), Detection("a", (0, 0, 0), 0.5), Detection("a", (70, 0, 0), 0.5)]
    curve = froc(detections, nodules, n_scans=4)
    assert np.allclose(curve.fps_per_scan, [0, 0.25, 0.5]) and np.allclose(curve.sensitivity, [0, 0, 0.5])
    assert np.allclose(curve.sensitivity_at([0.125, 0.25, 0.375, 0.5, 8.0]), [0, 0, 0.25, 0.5, 0.5])


def test_matching_never_double_counts():
    # Two overlapping nodules: the first detection takes the nearer (relative to radius), the second the other.
    nodules = [ReferenceNodule("a", (0, 0, 0), 10.0), ReferenceNodule("a", (6, 0, 0), 10.0)]
    detections = [Detection("a", (4, 0, 0), 0.9), Detection("a", (3, 0, 0), 0.8), Detection("a", (2, 0, 0), 0.7)]
    m = match_detections(detections, nodules)
    assert m.outcome == ["tp", "tp", "duplicate"] and m.nodule_of == {0: 1, 1: 0}
    assert sorted(m.detection_of) == [0, 1] and len(set(m.detection_of.values())) == 2
    # The radius is inclusive; a little beyond it, or in another scan, is a false positive.
    edge = [Detection("a", (0, 5.0, 0), 0.6), Detection("a", (0, -5.01, 0), 0.5), Detection("b", (0, 0, 0), 0.4)]
    assert match_detections(edge, nodules[:1]).outcome == ["tp", "fp", "fp"]


def test_detections_on_ignored_findings_are_neither_tp_nor_fp():
    nodules = [ReferenceNodule("a", (0, 0, 0), 10.0), ReferenceNodule("a", (30, 0, 0), 4.0, ignore=True)]
    detections = [Detection("a", (30, 1, 0), 0.9), Detection("a", (0, 0, 1), 0.3)]
    m = match_detections(detections, nodules)
    assert m.outcome == ["ignored", "tp"]
    curve = froc(detections, nodules, n_scans=1, matching=m)
    assert curve.n_nodules == 1 and curve.cpm() == 1.0


def test_ignoring_smaller_marks_only_the_small_and_keeps_earlier_marks():
    marked = [*NODULES, ReferenceNodule("c", (0, 0, 0), 12.0, 1, ignore=True)]
    out = ignoring_smaller(marked, 8.0)
    assert [n.ignore for n in out] == [False, True, False, False, True]
    assert [n.diameter_mm for n in out] == [n.diameter_mm for n in marked] and not NODULES[1].ignore
    # Nodule a2 (6 mm) ignored: a hit on it is no longer a false positive or a true one.
    detections = [Detection("a", (50, 0, 0), 0.9), Detection("a", (0, 0, 0), 0.5)]
    assert match_detections(detections, out).outcome == ["ignored", "tp"]


def test_matching_above_a_threshold_ignores_the_detections_below_it():
    rng = np.random.default_rng(5)
    nodules = [ReferenceNodule(f"s{i % 3}", tuple(rng.uniform(-40, 40, 3)), rng.uniform(4, 25)) for i in range(12)]
    detections = [Detection(f"s{i % 3}", tuple(rng.uniform(-40, 40, 3)), float(rng.uniform())) for i in range(60)]
    detections += [Detection(n.case, tuple(np.asarray(n.center_lps) + 1), float(rng.uniform())) for n in nodules]
    curve = froc(detections, nodules, n_scans=3)
    for t, fps, sens in zip(curve.thresholds[1:], curve.fps_per_scan[1:], curve.sensitivity[1:]):
        kept = [d for d in detections if d.score >= t]
        outcome = match_detections(kept, nodules).outcome
        assert outcome.count("tp") == round(sens * len(nodules)) and outcome.count("fp") == round(fps * 3)


def test_froc_rejects_empty_references():
    with pytest.raises(ValueError):
        froc([], [ReferenceNodule("a", (0, 0, 0), 5.0, ignore=True)], n_scans=1)
    with pytest.raises(ValueError):
        froc([], NODULES, n_scans=0)


def test_size_bins():
    assert [size_bin(d) for d in (2.9, 3.0, 5.99, 6.0, 10.0, 19.9, 20.0, 29.9, 30.0)] == [
        "<3", "3-6", "3-6", "6-10", "10-20", "10-20", "20-30", "20-30", ">=30"]


def _cubes() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((20, 20, 40), np.uint8)
    gt[2:6, 2:6, 2:6] = 1  # 64 voxels
    gt[10:14, 10:14, 20:24] = 2  # 64 voxels, missed by the prediction
    pred = np.zeros_like(gt)
    pred[2:6, 2:6, 3:7] = 5  # shifted by one: 48 shared voxels
    pred[15:18, 15:18, 30:33] = 7  # a false positive
    return pred, gt


def test_nodule_overlaps_by_overlap_and_by_pairs():
    pred, gt = _cubes()
    by_overlap = nodule_overlaps(pred, gt)
    assert by_overlap[1] == {"pred_label": 5, "dice": pytest.approx(96 / 128), "iou": pytest.approx(48 / 80)}
    assert by_overlap[2] == {"pred_label": 0, "dice": 0.0, "iou": 0.0}
    paired = nodule_overlaps(pred, gt, pairs={1: 7, 2: 0})  # a wrong pairing scores what it pairs
    assert paired[1]["pred_label"] == 7 and paired[1]["dice"] == 0.0
    with pytest.raises(ValueError):
        nodule_overlaps(pred[:-1], gt)


def test_summary_by_type_and_size():
    nodules = [ReferenceNodule("a", (0, 0, 0), 5.0, 1, "solid"), ReferenceNodule("a", (40, 0, 0), 8.0, 2, "solid"),
               ReferenceNodule("a", (80, 0, 0), 12.0, 3, "ground-glass")]
    detections = [Detection("a", (0, 0, 0), 0.9, 1), Detection("a", (40, 0, 0), 0.8, 2)]
    matching = match_detections(detections, nodules)
    overlaps = {"a": {1: {"dice": 0.8, "iou": 0.6}, 2: {"dice": 0.6, "iou": 0.4}, 3: {"dice": 0.0, "iou": 0.0}}}
    rows = nodule_rows(nodules, detections, matching, overlaps)
    summary = nodule_summary(rows)
    assert summary["all"]["detected"] == 2 and summary["all"]["sensitivity"] == pytest.approx(2 / 3)
    assert summary["all"]["dice"]["mean"] == pytest.approx(0.7) and summary["all"]["dice"]["sd"] == pytest.approx(0.1)
    assert summary["type"]["solid"]["dice"]["n"] == 2 and summary["type"]["ground-glass"]["dice"]["n"] == 0
    assert list(summary["size_bin"]) == ["3-6", "6-10", "10-20"]
    assert summary["size_bin"]["6-10"]["iou"]["mean"] == pytest.approx(0.4)


def _spheres(centres_vox, radius_vox, shape=(24, 40, 40)) -> np.ndarray:
    k, j, i = np.indices(shape)
    out = np.zeros(shape, np.uint8)
    for label, (ci, cj, ck) in enumerate(centres_vox, start=1):
        out[(i - ci) ** 2 + (j - cj) ** 2 + (k - ck) ** 2 <= radius_vox**2] = label
    return out


def test_eval_nodule_cli_folders(tmp_path, capsys):
    geometry = Volume(np.zeros((24, 40, 40), np.uint8), (0.8, 0.8, 1.0), (-10.0, 5.0, 20.0))
    for sub in ("pred", "gt", "ct"):
        (tmp_path / sub).mkdir()
    # Case c1: both nodules found, plus one FP; case c2: its nodule missed, one FP. Label maps for Dice.
    gt1 = geometry.with_array(_spheres([(10, 10, 10), (30, 28, 12)], 4))
    gt2 = geometry.with_array(_spheres([(20, 20, 12)], 5))
    for name, gt in (("c1", gt1), ("c2", gt2)):
        write_volume(gt, tmp_path / "gt" / f"{name}.nii.gz")
        write_volume(gt.with_array(np.where(gt.array > 0, 40, -850).astype(np.int16)), tmp_path / "ct" / f"{name}.nrrd")
    table = nodule_table(gt1, scores={1: 0.9, 2: 0.6})
    table.columns["label"] = [1, 2]
    for key in table.columns:
        table.columns[key].append({"center_lps_x_mm": 0.0, "center_lps_y_mm": 0.0, "center_lps_z_mm": 0.0,
                                   "score": 0.7, "label": 0}.get(key))
    write_table(tmp_path / "pred" / "c1.csv", table)
    write_volume(gt1, tmp_path / "pred" / "c1.nii.gz")  # a perfect segmentation of c1's nodules
    fp = nodule_table(geometry.with_array(_spheres([(5, 35, 5)], 2)), scores={1: 0.8})
    write_table(tmp_path / "pred" / "c2.csv", fp)
    args = ["eval", "nodule", str(tmp_path / "pred"), str(tmp_path / "gt"), "--ct", str(tmp_path / "ct")]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nodules"] == 3 and (out["tp"], out["fp"]) == (2, 2)
    # Scores: 0.9 TP, 0.8 FP, 0.7 FP, 0.6 TP over 2 scans -> (0, 1/3), (0.5, 1/3), (1, 1/3), (1, 2/3).
    assert list(out["sensitivity_at"]) == [f"{r:g}" for r in FP_RATES]
    assert list(out["sensitivity_at"].values()) == pytest.approx([1 / 3] * 3 + [2 / 3] * 4)
    assert out["cpm"] == pytest.approx((1 + 8 / 3) / 7)
    assert out["summary"]["all"]["dice"] == {"mean": 1.0, "sd": 0.0, "n": 2}
    assert set(out["summary"]["type"]) == {"solid"}
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "CPM 0.5238" in text and "type solid" in text
    # c1's nodules measure 6.8 mm, c2's 8.6 mm: at 7.5 mm c1's two hits are neither found nor false positives.
    assert main([*args, "--json", "--min-diameter", "7.5"]) == 0
    large = json.loads(capsys.readouterr().out)
    assert large["ignored"] == 2 and (large["tp"], large["fp"]) == (0, 2) and large["cpm"] == 0.0
    assert large["summary"]["all"]["nodules"] == 1
    assert main([*args, "--min-diameter", "7.5"]) == 0
    assert "2 nodule(s) under 7.5 mm ignored" in capsys.readouterr().out
    assert main([*args, "--min-diameter", "-1"]) == 2
    assert "--min-diameter" in capsys.readouterr().err


def test_eval_nodule_cli_errors(tmp_path):
    (tmp_path / "p.csv").write_text("label,score\n1,0.5\n")
    write_volume(Volume(np.zeros((4, 4, 4), np.uint8)), tmp_path / "g.nii.gz")
    assert main(["eval", "nodule", str(tmp_path / "p.csv"), str(tmp_path / "g.nii.gz")]) == 2
    with pytest.raises(InputError):
        from clinseg.cli.eval import read_detections

        read_detections(tmp_path / "p.csv", "g")
