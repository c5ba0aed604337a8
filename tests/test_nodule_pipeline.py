"""NoduleSeg end to end with the classical engine: ``clinseg nodule`` on a small chest phantom (found nodules,
their Dice, the table, the jsonl progress), the empty answer, cancel, and the refusals of unusable inputs."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from clinseg.cli import build_parser, main
from clinseg.errors import Cancelled, InputError, ModelError
from clinseg.io import write_volume
from clinseg.metrics.detection import Detection, ReferenceNodule, match_detections, nodule_overlaps
from clinseg.output import read_result
from clinseg.phantoms import generate_chest
from clinseg.post.nodules import TABLE_COLUMNS
from clinseg.progress import CancelToken
from clinseg.tasks.nodule import NoduleOptions, run_nodule
from clinseg.tasks.nodule import pipeline as nodule_pipeline
from clinseg.tasks.nodule.classical import Finding
from clinseg.tasks.nodule.segment import NoduleMask
from clinseg.volume import Volume

SEED = 11  # neither a training (100-107) nor a held-out bench seed (200-209)


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    phantom = generate_chest(seed=SEED, preset="small", n_nodules=4, n_distractors=2)
    path = write_volume(phantom.ct, tmp_path_factory.mktemp("chest") / "chest.nii.gz")
    return phantom, path


@pytest.fixture(scope="module")
def cli_run(chest, tmp_path_factory):
    """``clinseg nodule CT -o OUT --engine auto --no-preview --min-score 0 --progress jsonl`` once."""
    _, path = chest
    out = tmp_path_factory.mktemp("run") / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["nodule", str(path), "-o", str(out), "--engine", "auto", "--device", "cpu",
                     "--no-preview", "--min-score", "0", "--progress", "jsonl"])
    assert code == 0
    events = [json.loads(line) for line in stdout.getvalue().splitlines() if line.strip()]
    return out, events


def _matched(phantom, result):
    table = next(t for t in result.tables if t.name == "nodules")
    dets = [Detection("c", (r["center_lps_x_mm"], r["center_lps_y_mm"], r["center_lps_z_mm"]), r["score"], r["label"])
            for r in table.rows()]
    refs = [ReferenceNodule("c", tuple(n.center_lps), n.diameter_mm, n.label, n.kind) for n in phantom.nodules]
    matching = match_detections(dets, refs)
    pairs = {refs[n].label: dets[d].label for n, d in matching.detection_of.items()}
    return refs, matching, nodule_overlaps(result.labelmap.array, phantom.nodule_labels.array, pairs)


def test_cli_writes_label_map_table_and_summary(cli_run):
    out, _ = cli_run
    assert {"nodule.seg.nrrd", "nodules.csv", "summary.json"} <= {p.name for p in out.iterdir()}
    result = read_result(out)
    table = next(t for t in result.tables if t.name == "nodules")
    assert list(table.columns) == TABLE_COLUMNS
    labels = sorted(int(v) for v in np.unique(result.labelmap.array) if v)
    assert labels == list(range(1, table.n_rows + 1)) == table.columns["label"]
    assert [s.name for s in result.segments] == [f"Nodule {n}" for n in labels]
    scores = table.columns["score"]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert result.metrics["count"] == table.n_rows and set(result.metrics["timings_s"]) >= {"lungs", "detection"}


def test_cli_streams_jsonl_stages_and_result(cli_run):
    _, events = cli_run
    stages = [e.get("stage") for e in events]
    for stage in ("checks", "lungs", "detection", "measurement"):
        assert stage in stages
    assert stages.index("lungs") < stages.index("detection") < stages.index("measurement")
    assert events[-1]["event"] == "result" and events[-1]["metrics"]["engine"] == "model"
    assert events[-1]["metrics"]["model"] == "nodule-fpr-phantom"


def test_found_nodules_and_their_dice(chest, cli_run):
    phantom, _ = chest
    out, _ = cli_run
    refs, matching, overlaps = _matched(phantom, read_result(out))
    # Seed 11: a 3.0 mm solid, a 10.7 mm juxta-vascular solid and two 3.5-3.8 mm juxta-pleural part-solid
    # nodules. All four are found (any score); the juxta-vascular one keeps part of its vessel (Dice 0.54).
    assert len(matching.detection_of) == len(refs) == 4
    dice = [overlaps[r.label]["dice"] for r in refs]
    assert np.mean(dice) >= 0.7 and min(dice) >= 0.4, dice


def test_every_nodule_found_at_a_fixed_score_small_ones_included(chest, cli_run):
    """With the built-in false-positive network (the engine's default when installed): at score >= 0.35 all four
    nodules of seed 11, the 3.0 mm solid and the 3.5 / 3.8 mm juxta-pleural part-solid ones included, are found,
    with few false positives (measured: scores 0.90, 0.70, 0.46, 0.37; 6 FPs at 0.35, the best 0.51)."""
    phantom, _ = chest
    out, _ = cli_run
    result = read_result(out)
    table = next(t for t in result.tables if t.name == "nodules")
    refs, matching, _ = _matched(phantom, result)
    scores = table.columns["score"]
    found = {n: scores[d] for n, d in matching.detection_of.items()}
    assert len(found) == len(refs) == 4 and min(found.values()) >= 0.35, found
    assert min(r.diameter_mm for r in refs) < 3.5  # the small nodules are part of the assertion
    fps = [s for s, o in zip(scores, matching.outcome) if o == "fp" and s >= 0.35]
    assert len(fps) <= 7, fps


def test_min_score_filters_and_empty_result_is_valid(chest, monkeypatch, tmp_path):
    phantom, _ = chest
    monkeypatch.setattr(nodule_pipeline, "find_nodules", lambda *a, **k: [])
    result = run_nodule(phantom.ct, NoduleOptions(engine="auto"))
    assert result.metrics["count"] == 0 and result.metrics["message"] == "no nodule above threshold"
    assert not result.labelmap.array.any() and result.segments == []
    from clinseg.output import write_result

    write_result(result, tmp_path / "empty")
    back = read_result(tmp_path / "empty")
    table = next(t for t in back.tables if t.name == "nodules")
    assert table.n_rows == 0


def test_thick_slices_get_a_warning_and_the_thick_slice_reducer(chest, monkeypatch):
    phantom, _ = chest
    monkeypatch.setattr(nodule_pipeline, "find_nodules", lambda *a, **k: [])
    fine = run_nodule(phantom.ct, NoduleOptions(engine="auto")).metrics
    assert fine["warnings"] == [] and fine["model"] == "nodule-fpr-phantom"
    ct = phantom.ct
    thick = Volume(ct.array[::4], (ct.spacing[0], ct.spacing[1], 4 * ct.spacing[2]), ct.origin, ct.direction, "thick")
    metrics = run_nodule(thick, NoduleOptions(engine="auto")).metrics
    warnings = metrics["warnings"]
    assert len(warnings) == 1 and f"{4 * ct.spacing[2]:.1f} mm" in warnings[0] and "1.4 mm" in warnings[0]
    assert metrics["model"] == "nodule-fpr-thick-phantom"  # the built-in reducer for thick slices
    # A model the user names is kept whatever the sampling.
    assert run_nodule(thick, NoduleOptions(engine="model", model_id="nodule-fpr-phantom")).metrics["model"] == \
        "nodule-fpr-phantom"


def test_min_score_keeps_only_higher_scores(chest, monkeypatch):
    phantom, _ = chest
    shape = phantom.ct.shape

    def finding(k: int, score: float) -> Finding:
        mask = np.zeros((3, 3, 3), bool)
        mask[1, 1, 1] = True
        box = (slice(40, 43), slice(20 + 10 * k, 23 + 10 * k), slice(60, 63))
        return Finding(None, NoduleMask(box, mask, mask, -400.0, -850.0, 0.0, 0.0, False), np.zeros(1), score)

    fake = [finding(0, 0.9), finding(1, 0.6), finding(2, 0.3)]
    monkeypatch.setattr(nodule_pipeline, "find_nodules", lambda *a, **k: fake)
    result = run_nodule(phantom.ct, NoduleOptions(engine="auto", min_score=0.5))
    table = next(t for t in result.tables if t.name == "nodules")
    assert table.columns["score"] == [0.9, 0.6] and result.metrics["candidates"] == 3
    assert result.labelmap.array[41, 31, 61] == 2 and result.labelmap.array[41, 41, 61] == 0
    assert result.labelmap.shape == shape


def test_cancel_writes_nothing(chest, monkeypatch, tmp_path):
    _, path = chest
    token = CancelToken()

    def cancel_during_detection(*args, **kwargs):
        token.cancel()
        return []

    monkeypatch.setattr(nodule_pipeline, "find_nodules", cancel_during_detection)
    args = build_parser().parse_args(["nodule", str(path), "-o", str(tmp_path / "out"), "--progress", "none"])
    args.cancel = token
    with pytest.raises(Cancelled):
        args.func(args)
    assert not (tmp_path / "out").exists()


def _volume(array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Volume:
    return Volume(array, spacing, (0.0, 0.0, 0.0), np.eye(3), name="scan")


def test_refuses_flat_mri_and_lungless_inputs():
    with pytest.raises(InputError, match="3-D scan is expected"):
        run_nodule(_volume(np.full((2, 200, 200), -1000, np.int16)))
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="Hounsfield"):
        run_nodule(_volume(rng.uniform(0, 1200, (40, 120, 120)).astype(np.float32), (1.0, 1.0, 2.0)))
    body = np.full((40, 120, 120), -1000, np.int16)
    yy, xx = np.mgrid[:120, :120]
    body[:, (yy - 60) ** 2 + (xx - 60) ** 2 < 50 ** 2] = 40  # a water cylinder: a body without lungs
    with pytest.raises(InputError, match="no lungs"):
        run_nodule(_volume(body, (1.0, 1.0, 2.0)))


def test_bad_engine_and_score_are_one_line_errors(chest):
    phantom, _ = chest
    with pytest.raises(InputError, match="min-score"):
        run_nodule(phantom.ct, NoduleOptions(min_score=1.5))
    with pytest.raises(InputError, match="unknown engine"):
        run_nodule(phantom.ct, NoduleOptions(engine="fast"))
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        run_nodule(phantom.ct, NoduleOptions(engine="model", model_id="no-such-model"))


def test_engine_chooses_the_score(chest, monkeypatch):
    """classical: the logistic (no reducer); auto/model: the built-in FP network; another task's model refused."""
    phantom, _ = chest
    seen = []
    monkeypatch.setattr(nodule_pipeline, "find_nodules", lambda *a, **k: seen.append(a[5]) or [])
    classical = run_nodule(phantom.ct, NoduleOptions(engine="classical"))
    auto = run_nodule(phantom.ct, NoduleOptions(engine="auto"))
    assert seen[0] is None and (classical.metrics["engine"], classical.metrics["model"]) == ("classical", None)
    assert seen[1].model_id == "nodule-fpr-phantom" and seen[1].network is not None
    assert (auto.metrics["engine"], auto.metrics["model"]) == ("model", "nodule-fpr-phantom")
    with pytest.raises(InputError, match="not a nodule model"):
        run_nodule(phantom.ct, NoduleOptions(engine="model", model_id="stroke-dunet-phantom"))
