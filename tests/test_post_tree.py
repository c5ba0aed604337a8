"""Airway post-processing: components, skeleton graph and the centerline tree (synthetic tubes + real ATM'22 trees)."""

from __future__ import annotations

import numpy as np
import pytest

from clinseg.errors import InputError
from clinseg.post.components import component_near, component_report, fill_holes, largest_component
from clinseg.post.skeleton import SkeletonGraph, skeletonize
from clinseg.post.tree import LOBAR, TRACHEA, extract_tree
from clinseg.volume import Volume

# A bronchial tree in LPS mm (patient's left = +x, anterior = -y, superior = +z): name -> (start, end, radius).
# The trachea starts above the grid so the scan's edge cuts it, as in a chest CT.
ANATOMY = {
    "Trachea": ((0, 0, 100), (0, 0, 62), 6.0),
    "RightMainBronchus": ((0, 0, 62), (-16, 0, 52), 4.5),
    "LeftMainBronchus": ((0, 0, 62), (24, 0, 46), 4.0),
    "RightUpperLobeBronchus": ((-16, 0, 52), (-28, 0, 62), 3.0),
    "BronchusIntermedius": ((-16, 0, 52), (-20, 0, 36), 3.5),
    "RightMiddleLobeBronchus": ((-20, 0, 36), (-28, -16, 30), 2.5),
    "RightLowerLobeBronchus": ((-20, 0, 36), (-22, 4, 18), 3.0),
    "LeftUpperLobeBronchus": ((24, 0, 46), (34, -10, 54), 3.0),
    "LeftLowerLobeBronchus": ((24, 0, 46), (28, 4, 26), 3.0),
}
SEGMENTAL = [  # two children for each lobar bronchus: (start, end, radius)
    ((-28, 0, 62), (-34, -6, 74), 2.0), ((-28, 0, 62), (-40, 6, 64), 2.0),
    ((-28, -16, 30), (-34, -24, 24), 1.8), ((-28, -16, 30), (-24, -26, 34), 1.8),
    ((-22, 4, 18), (-32, 8, 8), 2.0), ((-22, 4, 18), (-14, 8, 6), 2.0),
    ((34, -10, 54), (40, -18, 66), 2.0), ((34, -10, 54), (44, -8, 46), 2.0),
    ((28, 4, 26), (36, 8, 14), 2.0), ((28, 4, 26), (20, 8, 12), 2.0),
]


def grid(spacing=(0.8, 0.8, 0.8), lo=(-50, -32, 0), hi=(50, 20, 86), flip_xy: bool = False) -> Volume:
    """Empty volume covering the LPS box ``lo..hi``; ``flip_xy`` stores it with i, j running to -x, -y."""
    size = [int(np.ceil((h - low) / s)) + 1 for low, h, s in zip(lo, hi, spacing)]
    direction = np.diag([-1.0, -1.0, 1.0]) if flip_xy else np.eye(3)
    origin = [hi[0], hi[1], lo[2]] if flip_xy else list(lo)
    return Volume(np.zeros(size[::-1], dtype=np.uint8), spacing, origin, direction)


def draw_tubes(volume: Volume, tubes, value: int = 1) -> Volume:
    """Rasterise capsules (segment start, end, radius in LPS mm) into ``volume`` (in place)."""
    nk, nj, ni = volume.shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    xyz = volume.index_to_physical(np.stack([i, j, k], axis=-1).reshape(-1, 3))
    flat = volume.array.reshape(-1)
    for start, end, radius in tubes:
        a, b = np.asarray(start, float), np.asarray(end, float)
        ab = b - a
        t = np.clip(((xyz - a) @ ab) / (ab @ ab), 0.0, 1.0)
        dist = np.linalg.norm(xyz - (a + t[:, None] * ab), axis=1)
        flat[dist <= radius] = value
    return volume


def bronchial_phantom(flip_xy: bool = False, segmental: bool = True) -> Volume:
    tubes = list(ANATOMY.values()) + (SEGMENTAL if segmental else [])
    return draw_tubes(grid(flip_xy=flip_xy), tubes)


def y_phantom(spacing=(0.7, 0.7, 0.9)) -> Volume:
    vol = grid(spacing, lo=(-30, -12, 0), hi=(30, 12, 60))
    tubes = [((0, 0, 70), (0, 0, 35), 5.0), ((0, 0, 35), (-20, 0, 10), 3.5), ((0, 0, 35), (20, 0, 10), 3.5)]
    return draw_tubes(vol, tubes)


# --- components -----------------------------------------------------------------------------------------------
def test_largest_component_fill_holes_and_report():
    vol = Volume(np.zeros((30, 30, 30), np.uint8), (0.5, 0.5, 2.0), (10.0, 20.0, 30.0))
    vol.array[2:12, 2:12, 2:12] = 1
    vol.array[6:8, 6:8, 6:8] = 0  # enclosed cavity
    vol.array[20:23, 20:22, 25:26] = 1  # island of 6 voxels
    assert largest_component(vol).sum() == 1000 - 8
    assert fill_holes(vol)[6:8, 6:8, 6:8].all() and fill_holes(vol).sum() == 1000 + 6
    report = component_report(vol)
    assert [c.voxels for c in report] == [992, 6]
    assert report[1].volume_mm3 == pytest.approx(6 * 0.5 * 0.5 * 2.0)
    # centroid of k 20..22, j 20..21, i 25 -> LPS (10 + 25*0.5, 20 + 20.5*0.5, 30 + 21*2)
    assert report[1].centroid_lps == pytest.approx((22.5, 30.25, 72.0))
    assert component_report(np.zeros((4, 4, 4))) == []


def test_component_near_a_point_beats_a_larger_one_elsewhere():
    mask = np.zeros((30, 30, 30), bool)
    mask[2:12, 2:12, 2:12] = True  # 1000 voxels, far from the point
    mask[20:24, 20:24, 20:24] = True  # 64 voxels, at the point
    mask[26:28, 18:20, 18:20] = True  # 8 voxels, also within reach of the point
    kept = component_near(mask, np.array([25, 22, 22]), (3, 3, 3))
    assert kept.sum() == 64 and kept[21, 21, 21]
    far = component_near(mask, np.array([0, 29, 0]), (1, 1, 1))  # nothing within reach: the largest
    assert far.sum() == 1000
    assert not component_near(np.zeros((4, 4, 4), bool), np.array([1, 1, 1]), (1, 1, 1)).any()


def test_skeleton_graph_of_a_plus_sign():
    mask = np.zeros((9, 21, 21), bool)
    mask[4, 10, 2:19] = True
    mask[4, 2:19, 10] = True
    graph = SkeletonGraph.from_skeleton(mask, (1.0, 1.0, 1.0))  # already one voxel thin
    graph.merge_chains()
    assert len(graph.edges) == 4
    assert sorted(graph.degree(n) for n in graph.node_voxel) == [1, 1, 1, 1, 4]
    assert sorted(round(graph.edge_length(e)) for e in graph.edges) == [8, 8, 8, 8]
    assert skeletonize(mask)[4, 10, 3:18].all()  # thinning keeps a thin line (at most its tip voxels go)


# --- tree -----------------------------------------------------------------------------------------------------
def test_y_tube_branches_radii_and_lengths():
    tree = extract_tree(y_phantom())
    assert len(tree.branches) == 3 and tree.loops_broken == 0 and tree.islands == []
    trachea, *kids = tree.branches
    assert trachea.generation == 0 and trachea.parent is None and sorted(trachea.children) == [1, 2]
    assert [k.generation for k in kids] == [1, 1]
    assert trachea.points_lps[0][2] == pytest.approx(60, abs=1.0)  # reaches the scan's top edge
    assert trachea.points_lps[-1] == pytest.approx([0, 0, 35], abs=2.0)
    assert trachea.length_mm == pytest.approx(25, abs=2.5)
    assert trachea.mean_radius_mm == pytest.approx(5.0, abs=0.9)
    for kid in kids:
        assert kid.mean_radius_mm == pytest.approx(3.5, abs=0.9)
        # designed 32 mm from the junction to the cap centre; the centerline stops inside the rounded cap
        assert 24 < kid.length_mm < 33
        assert np.linalg.norm(kid.points_lps[-1] - [np.sign(kid.points_lps[-1][0]) * 20, 0, 10]) < 5


def _binary_tree(levels: int) -> list:
    tubes = [((0, 0, 90), (0, 0, 70), 5.0)]
    tips = [((0, 0, 70), 5.0, np.array([1.0, 0.0]))]
    for level in range(1, levels + 1):
        new = []
        for (x, y, z), r, axis in tips:
            for sign in (-1, 1):
                length = 22.0 / level
                end = (x + sign * axis[0] * length, y + sign * axis[1] * length, z - 0.8 * length)
                tubes.append(((x, y, z), end, r * 0.75))
                new.append((end, r * 0.75, axis[::-1]))
        tips = new
    return tubes


def test_multi_generation_tree_counts():
    vol = draw_tubes(grid((0.6, 0.6, 0.6), lo=(-45, -30, 20), hi=(45, 30, 80)), _binary_tree(3))
    tree = extract_tree(vol)
    assert np.bincount([b.generation for b in tree.branches]).tolist() == [1, 2, 4, 8]
    for b in tree.branches:
        assert b.generation == (0 if b.parent is None else tree.branches[b.parent].generation + 1)
        assert all(tree.branches[c].parent == b.id for c in b.children)
        assert np.linalg.norm(b.points_lps[0] - tree.branches[b.parent].points_lps[-1]) < 2.5 if b.parent else True


def test_loop_and_island_are_reported_not_fatal():
    vol = y_phantom()
    draw_tubes(vol, [((-12, 0, 18), (12, 0, 18), 1.2)])  # a thin bridge between the two children: one loop
    draw_tubes(vol, [((20, 8, 50), (22, 8, 50), 1.5)])  # a floating island
    tree = extract_tree(vol)
    assert tree.loops_broken == 1
    assert len(tree.islands) == 1 and tree.islands[0].centroid_lps == pytest.approx((21, 8, 50), abs=1.0)
    assert {tree.branches[c].generation for c in tree.root.children} == {1}
    # the tree is a tree: every branch reached once from the root
    seen, stack = set(), [0]
    while stack:
        b = stack.pop()
        assert b not in seen
        seen.add(b)
        stack.extend(tree.branches[b].children)
    assert seen == set(range(len(tree.branches)))


@pytest.mark.parametrize("flip_xy", [False, True])
def test_anatomical_names_on_synthetic_bronchi(flip_xy):
    tree = extract_tree(bronchial_phantom(flip_xy=flip_xy))
    for name, (_start, end, radius) in ANATOMY.items():
        branch = tree.named(name)
        assert branch is not None, name
        assert np.linalg.norm(branch.points_lps[-1] - end) < radius + 3, name
    assert tree.named(TRACHEA).generation == 0
    assert tree.named("RightMainBronchus").generation == tree.named("LeftMainBronchus").generation == 1
    assert {tree.named(n).lobe for n in LOBAR} == {"RightUpperLobe", "RightMiddleLobe", "RightLowerLobe",
                                                   "LeftUpperLobe", "LeftLowerLobe"}
    assert tree.carina_lps == pytest.approx([0, 0, 62], abs=3)
    assert len(tree.branches) == len(ANATOMY) + len(SEGMENTAL)


@pytest.mark.parametrize("top, refusal", [(56, "two trees of similar size"), (58, "cannot be told from the main"),
                                          (70, None)])
def test_a_scan_cut_at_or_below_the_carina_gives_no_misnamed_tree(top, refusal):
    """The top of the scan at ``top`` mm; the trachea (radius 6 mm) divides at 62 mm. Below the division the main
    bronchi are two separate trees; within its radius the trachea's centreline leaves the scan on both sides of
    the division. Either way no branch may be called the trachea; 8 mm above the division the tree is whole."""
    volume = draw_tubes(grid(hi=(50, 20, top)), list(ANATOMY.values()) + SEGMENTAL)
    if refusal is None:
        tree = extract_tree(volume)
        assert len(tree.branches) == len(ANATOMY) + len(SEGMENTAL)
        assert tree.carina_lps == pytest.approx([0, 0, 62], abs=3)
    else:
        with pytest.raises(InputError, match=refusal):
            extract_tree(volume)


def test_curves_and_table_describe_the_same_branches():
    tree = extract_tree(bronchial_phantom())
    curves, table = tree.to_curves(), tree.to_table()
    assert len(curves) == table.n_rows == len(tree.branches)
    by_name = {c.name: c for c in curves}
    rml = by_name["RightMiddleLobeBronchus"]
    assert rml.parent == "BronchusIntermedius" and rml.attributes["generation"] == 3
    assert rml.attributes["lobe"] == "RightMiddleLobe" and len(rml.attributes["children"]) == 2
    assert rml.radii.shape == (len(rml.points),)
    rows = {r["name"]: r for r in table.rows() if r["name"]}
    assert rows["Trachea"]["parent_id"] == -1
    assert rows["Trachea"]["mean_diameter_mm"] == pytest.approx(2 * rows["Trachea"]["mean_radius_mm"], abs=0.02)
    assert rows["RightMainBronchus"]["length_mm"] == pytest.approx(np.hypot(16, 10), abs=4)


def test_empty_and_tiny_masks_raise_input_error():
    with pytest.raises(InputError, match="empty"):
        extract_tree(Volume(np.zeros((5, 5, 5), np.uint8), name="mask.nii.gz"))
    dot = np.zeros((5, 5, 5), np.uint8)
    dot[2, 2, 2] = 1
    with pytest.raises(InputError, match="too small"):
        extract_tree(Volume(dot))


# --- real ATM'22 trees ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["224", "305", "307"])
def test_real_atm_trees_are_named(shared, case):
    from clinseg.io import read_volume

    path = shared / "data" / "atm22_airways" / "timi" / f"ATM_{case}.nii.gz"
    if not path.exists():
        pytest.skip(f"{path} absent")
    tree = extract_tree(read_volume(path))
    names = {b.name for b in tree.branches}
    assert {TRACHEA, "RightMainBronchus", "LeftMainBronchus", "BronchusIntermedius", *LOBAR} <= names
    trachea, rmb, lmb = tree.named(TRACHEA), tree.named("RightMainBronchus"), tree.named("LeftMainBronchus")
    assert trachea.points_lps[0][2] > trachea.points_lps[-1][2] + 50  # runs caudally for several cm
    assert trachea.mean_radius_mm > 5 and rmb.mean_radius_mm > 3 and lmb.mean_radius_mm > 3
    assert lmb.length_mm > rmb.length_mm  # the left main bronchus is the longer one
    assert rmb.points_lps[-1][0] < trachea.points_lps[-1][0] < lmb.points_lps[-1][0]  # right is -x in LPS
    assert tree.named("RightUpperLobeBronchus").points_lps[-1][2] > tree.named("BronchusIntermedius").points_lps[-1][2]
    assert 150 < len(tree.branches) < 1000 and max(b.generation for b in tree.branches) >= 8
