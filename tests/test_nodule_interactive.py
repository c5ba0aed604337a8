"""Click-to-add (``clinseg.tasks.nodule.interactive`` and ``clinseg nodule --add-at``) on small chest phantoms:
a click on a nodule gives the same mask and table row as a full run, a click elsewhere a one-line reason."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from clinseg.cli import main
from clinseg.errors import InputError
from clinseg.io import write_volume
from clinseg.output import read_result
from clinseg.phantoms import generate_chest
from clinseg.post.nodules import TABLE_COLUMNS
from clinseg.tasks.nodule import NoduleOptions, run_nodule
from clinseg.tasks.nodule.interactive import clicked_result, nodule_at, search_space


@pytest.fixture(scope="module")
def chest():
    """Three solid nodules of 4.0, 4.4 and 7.1 mm (one juxta-pleural), no vessels."""
    return generate_chest(seed=2, preset="small", with_vessels=False, n_nodules=3, n_distractors=0)


@pytest.fixture(scope="module")
def space(chest):
    return search_space(chest.ct)


def row_of(table, n: int) -> dict:
    return {k: v[n] for k, v in table.columns.items()}


def test_a_click_on_each_nodule_gives_the_runs_mask_and_row(chest, space):
    run = run_nodule(chest.ct, NoduleOptions(engine="auto"))
    run_labels = np.asarray(run.labelmap.array)
    table = run.tables[0]
    truth = np.asarray(chest.nodule_labels.array)
    for nodule in chest.nodules:
        for offset in ((0.0, 0.0, 0.0), (1.2, -0.8, 0.5)):  # on the centre, and off it inside the nodule
            clicked = nodule_at(space, nodule.center_lps + offset, label=7)
            mask = np.asarray(clicked.labelmap(chest.ct, 7).array) == 7
            assert np.count_nonzero(mask & (truth == nodule.label)) > 0.5 * np.count_nonzero(mask)
            # The run found the same nodule with the same segmenter: same voxels, same measurements.
            (label,) = set(np.unique(run_labels[mask])) - {0}
            assert np.array_equal(run_labels == label, mask)
            row = row_of(table, table.columns["label"].index(label))
            m = clicked.measurement
            assert m.label == 7 and m.voxels == row["voxels"]
            np.testing.assert_allclose(m.center_lps, [row[f"center_lps_{a}_mm"] for a in "xyz"], atol=0.006)
            np.testing.assert_allclose(m.center_ijk, [row[f"center_{a}"] for a in "ijk"], atol=0.006)
            assert m.axes.long_mm == pytest.approx(row["long_axis_mm"], abs=0.006)
            assert m.kind == row["type"] and m.lung_rads == row["lung_rads_size_category"]
            assert clicked.score == pytest.approx(row["score"], abs=1e-4)
            assert m.equivalent_diameter_mm == pytest.approx(nodule.diameter_mm, abs=1.5)


def test_a_click_off_a_nodule_is_refused_with_the_reason(chest, space):
    lungs = np.asarray(chest.lungs.array) > 0
    body_k, body_j, body_i = np.argwhere(~lungs & (np.asarray(chest.ct.array) > -200))[0]
    cases = [
        ((0.0, 0.0, -900.0), "lies outside the CT"),
        (chest.ct.index_to_physical(np.array([body_i, body_j, body_k], float)), "outside the lungs"),
        ((1.0, 2.0), "three finite LPS coordinates"),
    ]
    # Plain lung far from every nodule.
    far = np.argwhere(lungs & (np.asarray(chest.ct.array) < -800))
    centres = np.array([n.center_lps for n in chest.nodules])
    for kji in far[:: max(1, len(far) // 200)]:
        point = chest.ct.index_to_physical(kji[::-1].astype(float))
        if np.min(np.linalg.norm(centres - point, axis=1)) > 25:
            cases.append((point, "no nodule-like structure"))
            break
    for point, reason in cases:
        with pytest.raises(InputError, match=reason):
            nodule_at(space, point)


def test_a_click_on_a_vessel_is_refused():
    ph = generate_chest(seed=2, preset="small", with_vessels=True, n_nodules=3, n_distractors=0)
    with pytest.raises(InputError, match="tube-shaped"):
        nodule_at(ph.ct, (-58.3, -0.2, 63.0))  # a vessel the blob filter sees as a tube


def test_cli_add_at_writes_the_one_nodule(chest, tmp_path):
    path = tmp_path / "ct.nrrd"
    write_volume(chest.ct, path)
    x, y, z = chest.nodules[2].center_lps
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["nodule", str(path), "-o", str(out), f"--add-at={-x},{-y},{z}", "--ras", "--no-preview"])
    assert code == 0
    result = read_result(out)
    table = next(t for t in result.tables if t.name == "nodules")
    assert list(table.columns) == TABLE_COLUMNS and table.columns["label"] == [1]
    assert [s.name for s in result.segments] == ["Nodule 1"]
    assert set(np.unique(result.labelmap.array)) == {0, 1}
    expected = clicked_result(chest.ct, nodule_at(chest.ct, (x, y, z)))
    assert np.array_equal(result.labelmap.array, expected.labelmap.array)
    assert table.columns["volume_ml"] == expected.tables[0].columns["volume_ml"]
    assert result.metrics["count"] == 1 and result.metrics["message"].startswith("nodule added at")
    assert (result.metrics["engine"], result.metrics["model"]) == ("model", "nodule-fpr-phantom")

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        assert main(["nodule", str(path), "-o", str(tmp_path / "bad"), "--add-at", "1,2"]) == 2
    assert "--add-at: '1,2' is not X,Y,Z in mm" in stderr.getvalue()
