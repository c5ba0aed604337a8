"""Bronchoscopic route planning on a synthetic bronchial tree with known anatomy."""

from __future__ import annotations

import numpy as np
import pytest
from test_post_tree import ANATOMY, bronchial_phantom

from clinseg.errors import InputError
from clinseg.post.route import plan_route
from clinseg.post.tree import extract_tree
from clinseg.volume import Volume


@pytest.fixture(scope="module")
def tree():
    return extract_tree(bronchial_phantom(segmental=False))


def test_route_to_the_middle_lobe_follows_the_right_branches(tree):
    tip = np.array(ANATOMY["RightMiddleLobeBronchus"][1], float)
    target = tip + [-4.0, -6.0, 0.0]  # a nodule just beyond the bronchus' end
    route = plan_route(tree, target)
    names = [b["name"] for b in route.branches]
    assert names == ["Trachea", "RightMainBronchus", "BronchusIntermedius", "RightMiddleLobeBronchus"]
    assert [b["generation"] for b in route.branches] == [0, 1, 2, 3]
    assert route.remaining_mm == pytest.approx(np.linalg.norm(target - route.points_lps[-1]))
    assert 6.0 < route.remaining_mm < 12.0
    # path length ~ trachea (from the scan's top, 86 mm) + main + intermedius + middle lobe designed lengths
    designed = 24 + np.hypot(16, 10) + np.hypot(4, 16) + np.linalg.norm([8, 16, 6])
    assert route.path_length_mm == pytest.approx(designed, rel=0.12)
    assert np.all(np.diff(route.distance_mm) > 0)
    assert route.points_lps.shape == (len(route.radius_mm), 3)
    # narrowest lumen is in the middle lobe bronchus (radius 2.5), not in the wide trachea
    assert route.branch_ids[route.narrowest_index] == tree.named("RightMiddleLobeBronchus").id
    assert route.narrowest_diameter_mm < 5.5
    assert route.scope_stop is None


def test_scope_stops_where_the_lumen_narrows(tree):
    target = np.array(ANATOMY["RightLowerLobeBronchus"][1], float)
    route = plan_route(tree, target, scope_diameter_mm=8.0)
    stop = route.scope_stop
    # trachea (12 mm) and right main (9 mm) admit an 8 mm scope; the intermedius (7 mm) does not
    assert stop is not None and stop["name"] == "BronchusIntermedius"
    assert stop["lumen_diameter_mm"] < 8.0
    assert stop["distance_mm"] > tree.named("Trachea").length_mm + 0.5 * tree.named("RightMainBronchus").length_mm
    assert stop["to_target_mm"] == pytest.approx(route.path_length_mm - stop["distance_mm"] + route.remaining_mm,
                                                 abs=0.02)
    rows = route.to_table().rows()
    assert [r["scope_passes"] for r in rows] == [True, True, False, False]
    thin = plan_route(tree, target, scope_diameter_mm=4.0)  # every lumen on this route is wider than 4 mm
    assert thin.scope_stop is None and all(r["scope_passes"] for r in thin.to_table().rows())


def test_route_curve_and_summary(tree):
    route = plan_route(tree, np.array(ANATOMY["LeftUpperLobeBronchus"][1], float), scope_diameter_mm=5.0)
    curve = route.to_curve()
    assert curve.points.shape == route.points_lps.shape and curve.radii.shape == route.radius_mm.shape
    summary = route.summary()
    assert summary["branch_sequence"] == ["Trachea", "LeftMainBronchus", "LeftUpperLobeBronchus"]
    assert summary["end_branch"]["name"] == "LeftUpperLobeBronchus"
    assert curve.attributes["path_length_mm"] == summary["path_length_mm"]


def test_far_target_and_target_outside_lung_are_refused(tree):
    with pytest.raises(InputError, match=r"is \d+\.\d mm from the nearest airway"):
        plan_route(tree, np.array([0.0, 90.0, 40.0]))
    lung = Volume(np.zeros((10, 10, 10), np.uint8), (10.0, 10.0, 10.0), (-50.0, -50.0, 0.0))
    lung.array[:, :, :5] = 1  # only the patient's right half (x < 0) is lung
    with pytest.raises(InputError, match="outside the lung mask"):
        plan_route(tree, np.array(ANATOMY["LeftUpperLobeBronchus"][1], float), lung_mask=lung)
    inside = plan_route(tree, np.array(ANATOMY["RightUpperLobeBronchus"][1], float), lung_mask=lung)
    assert inside.branches[-1]["name"] == "RightUpperLobeBronchus"
    with pytest.raises(InputError, match="scope"):
        plan_route(tree, np.zeros(3), scope_diameter_mm=0)
