"""Writers of a Result: markups JSON, CSV tables, the atomic output folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clinseg.errors import InputError
from clinseg.io import read_segmentation
from clinseg.io.markups import read_curves, write_curves
from clinseg.io.tables import read_table, write_table
from clinseg.output import read_result, write_result
from clinseg.result import Curve, Result, Table
from clinseg.terminology import AIRWAY
from clinseg.volume import Volume


def _curves() -> list[Curve]:
    trunk = Curve("Trachea", np.array([[0.0, 0, 0], [0, 0, -10], [0, 0, -20]]), np.array([8.0, 7.5, 7.0]),
                  None, {"generation": 0, "group": "centerlines"})
    child = Curve("RightMainBronchus", np.array([[0.0, 0, -20], [-5, 0, -25]]), np.array([6.0, 5.5]),
                  "Trachea", {"generation": np.int64(1), "group": "centerlines"})
    return [trunk, child]


def test_markups_round_trip_keeps_points_radius_and_tree(tmp_path):
    path = write_curves(tmp_path / "c.mrk.json", _curves())
    document = json.loads(path.read_text())
    assert document["markups"][0]["coordinateSystem"] == "LPS"
    back = read_curves(path)
    assert [c.name for c in back] == ["Trachea", "RightMainBronchus"]
    np.testing.assert_allclose(back[1].points, _curves()[1].points)
    np.testing.assert_allclose(back[0].radii, [8.0, 7.5, 7.0])
    assert back[1].parent == "Trachea" and back[1].attributes["generation"] == 1


def test_markups_reader_converts_ras_files(tmp_path):
    path = tmp_path / "ras.mrk.json"
    path.write_text(json.dumps({"markups": [{"type": "Curve", "name": "c", "coordinateSystem": "RAS",
                                             "controlPoints": [{"position": [1.0, 2.0, 3.0]}]}]}))
    np.testing.assert_allclose(read_curves(path)[0].points, [[-1.0, -2.0, 3.0]])


def test_table_round_trip(tmp_path):
    table = Table("branches", {"id": [1, 2], "name": ["Trachea", ""], "length_mm": [110.25, 31.0],
                               "z_mm": [-1234.56, 1 / 3]})
    back = read_table(write_table(tmp_path / "b.csv", table))
    assert back.columns == {"id": ["1", "2"], "name": ["Trachea", ""], "length_mm": ["110.25", "31"],
                            "z_mm": ["-1234.56", "0.3333333"]}


def test_write_result_is_complete_and_refuses_to_overwrite(tmp_path):
    mask = np.zeros((8, 9, 10), dtype=np.uint8)
    mask[2:5, 3:6, 4:8] = 1
    labelmap = Volume(mask, (0.7, 0.8, 1.5), (10.0, -5.0, 3.0))
    result = Result("airway", labelmap, [AIRWAY], _curves(), [Table("branches", {"id": [1, 2]})],
                    metrics={"n": np.int32(2)})
    out = tmp_path / "out"
    files = write_result(result, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["airway.seg.nrrd", "centerlines.mrk.json", "branches.csv", "summary.json"])
    assert set(files) == {"airway.seg.nrrd", "centerlines.mrk.json", "branches.csv", "summary.json"}
    seg, segments = read_segmentation(out / "airway.seg.nrrd")
    assert np.array_equal(seg.array, mask) and segments[0].name == "Airway"
    assert json.loads((out / "summary.json").read_text())["metrics"]["n"] == 2
    before = (out / "branches.csv").read_text()
    with pytest.raises(InputError, match="not empty"):
        write_result(result, out)
    assert (out / "branches.csv").read_text() == before


def test_failed_write_leaves_no_partial_folder(tmp_path):
    def broken_render(result, folder):
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        write_result(Result("airway", tables=[Table("t", {"a": [1]})]), tmp_path / "out", render=broken_render)
    assert list(tmp_path.iterdir()) == []


def test_read_result_gives_back_what_write_result_wrote(tmp_path):
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[2:4, 2:5, 3:6] = 1
    route = Curve("Route", np.array([[0.0, 0, 0], [0, 0, -12]]), np.array([4.0, 3.0]), None,
                  {"group": "route", "length_mm": 12.0})
    branches = Table("airway_branches", {"branch_id": [0, 1], "name": ["Trachea", "RightMainBronchus"],
                                         "length_mm": [33.0, 36.77], "lobe": ["", ""], "mean_diameter_mm": [8.0, None]})
    result = Result("airway", labelmap=Volume(labels, (0.7, 0.7, 1.25), (1.0, 2.0, 3.0), np.eye(3), "x"),
                    segments=[AIRWAY], curves=[*_curves(), route], tables=[branches], metrics={"volume_ml": 4.2})
    write_result(result, tmp_path / "out")
    back = read_result(tmp_path / "out")
    assert back.task == "airway" and back.metrics == {"volume_ml": 4.2}
    np.testing.assert_array_equal(back.labelmap.array, labels)
    np.testing.assert_allclose(back.labelmap.spacing, (0.7, 0.7, 1.25))
    assert [s.name for s in back.segments] == ["Airway"]
    assert [(c.name, c.attributes["group"]) for c in back.curves] == [
        ("Trachea", "centerlines"), ("RightMainBronchus", "centerlines"), ("Route", "route")]
    np.testing.assert_allclose(back.curves[1].radii, [6.0, 5.5], atol=1e-4)
    (table,) = back.tables
    assert table.columns["branch_id"] == [0, 1] and table.columns["length_mm"] == [33.0, 36.77]
    assert table.columns["mean_diameter_mm"] == [8.0, None]  # an empty cell in a numeric column
    assert table.columns["lobe"] == ["", ""]  # an all-empty column stays text
    assert set(back.files) == {"airway.seg", "centerlines.mrk", "route.mrk", "airway_branches"}
    with pytest.raises(InputError, match="summary.json"):
        read_result(tmp_path)
    (tmp_path / "out" / "summary.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable output summary"):
        read_result(tmp_path / "out")
