"""Surface distances (HD, HD95, ASD, surface Dice) on anisotropic grids, the per-organ QA table and ``eval seg``."""

from __future__ import annotations

import csv
import io
import json
import warnings

import numpy as np
import pytest
from scipy import ndimage

from clinseg.cli import main
from clinseg.io import write_volume
from clinseg.metrics.organs import organ_table
from clinseg.metrics.surface import (
    exposed_area,
    hausdorff,
    hd95,
    surface_dice,
    surface_distances,
    surface_metrics,
    surface_voxels,
)
from clinseg.volume import Volume

SPACING = (0.8, 1.1, 2.0)  # (i, j, k) mm
SHAPE = (40, 70, 90)  # (k, j, i)


def ellipsoid_radius_mm(shape=SHAPE, spacing=SPACING) -> np.ndarray:
    """Distance in mm of every voxel centre from the grid's centre."""
    k, j, i = np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij")
    return np.sqrt((k * spacing[2]) ** 2 + (j * spacing[1]) ** 2 + (i * spacing[0]) ** 2)


@pytest.mark.parametrize(("r", "d"), [(14.0, 5.0), (18.0, 3.0)])
def test_concentric_spheres_give_the_radius_gap(r, d):
    rr = ellipsoid_radius_mm()
    inner, outer = rr <= r, rr <= r + d
    half_voxel = max(SPACING) / 2
    m = surface_metrics(inner, outer, SPACING)
    assert abs(m["hd95_mm"] - d) <= half_voxel
    assert abs(m["asd_mm"] - d) <= half_voxel
    assert m["hd_mm"] >= m["hd95_mm"] >= m["asd_mm"] > 0
    # Surface Dice rises from 0 to 1 as the tolerance passes the gap (voxel-centre distances spread by a voxel).
    assert surface_dice(inner, outer, SPACING, d - max(SPACING)) == 0.0
    assert 0.0 < surface_dice(inner, outer, SPACING, d) < 1.0
    assert surface_dice(inner, outer, SPACING, d + max(SPACING)) == 1.0
    assert surface_metrics(outer, inner, SPACING) == pytest.approx(m)  # symmetric


@pytest.mark.parametrize(("axis", "voxels"), [(0, 2), (2, 3)])
def test_shifted_cube_gives_the_exact_shift(axis, voxels):
    cube = np.zeros(SHAPE, bool)
    cube[10:25, 20:45, 30:60] = True
    moved = np.roll(cube, voxels, axis=axis)
    shift_mm = voxels * SPACING[::-1][axis]  # spacing is (i, j, k); array axes are (k, j, i)
    d = surface_distances(cube, moved, SPACING)
    assert d.hd() == pytest.approx(shift_mm, abs=1e-9)
    assert d.hd_percentile(95) == pytest.approx(shift_mm, abs=1e-9)
    assert 0 < d.asd() < shift_mm
    assert d.surface_dice(shift_mm) == 1.0
    assert d.surface_dice(shift_mm + 1.0) == 1.0
    assert d.surface_dice(shift_mm - 0.1) < 1.0
    assert d.surface_dice(0.0) < d.surface_dice(shift_mm - 0.1)


def test_identical_masks_and_spacing_from_a_volume():
    cube = np.zeros(SHAPE, np.uint8)
    cube[5:9, 5:12, 5:20] = 1
    vol = Volume(cube, SPACING)
    assert surface_metrics(vol, vol) == {"hd_mm": 0.0, "hd95_mm": 0.0, "asd_mm": 0.0, "surface_dice": 1.0}
    # The spacing read from the Volume is used: a 1-voxel k shift is 2.0 mm, not 1 voxel.
    assert hausdorff(vol, vol.with_array(np.roll(cube, 1, axis=0))) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="spacing"):
        hd95(cube, cube)
    with pytest.raises(ValueError, match="shapes differ"):
        hd95(cube, cube[1:], SPACING)


def test_empty_masks_are_defined():
    empty = np.zeros(SHAPE, bool)
    blob = np.zeros(SHAPE, bool)
    blob[3:6, 3:6, 3:6] = True
    assert surface_metrics(empty, empty, SPACING) == {"hd_mm": 0.0, "hd95_mm": 0.0, "asd_mm": 0.0,
                                                      "surface_dice": 1.0}
    for a, b in ((blob, empty), (empty, blob)):
        m = surface_metrics(a, b, SPACING)
        assert m["hd_mm"] == m["hd95_mm"] == m["asd_mm"] == float("inf")
        assert m["surface_dice"] == 0.0


def test_surface_area_weights_and_grid_edge():
    one = np.zeros((3, 3, 3), bool)
    one[1, 1, 1] = True
    sx, sy, sz = SPACING
    assert exposed_area(one, SPACING[::-1]).sum() == pytest.approx(2 * (sx * sy + sy * sz + sx * sz))
    box = np.zeros((12, 12, 12), bool)
    box[2:7, 3:9, 1:11] = True  # 5 x 6 x 10 voxels (k, j, i)
    lx, ly, lz = 10 * sx, 6 * sy, 5 * sz
    assert exposed_area(box, SPACING[::-1]).sum() == pytest.approx(2 * (lx * ly + ly * lz + lx * lz))
    # A mask filling its corner of the grid: its edge faces are surface, as if the grid were padded.
    corner = np.zeros(SHAPE, bool)
    corner[:6, :8, :10] = True
    other = np.roll(corner, 2, axis=2)
    padded = [np.pad(m, 4) for m in (corner, other)]
    assert surface_voxels(corner)[0, 0, 0]
    assert surface_metrics(corner, other, SPACING) == pytest.approx(surface_metrics(*padded, SPACING))


def _blob(seed: int, shape=(36, 44, 52)) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=shape)
    return ndimage.gaussian_filter(noise, 4) > 0.02


def test_agrees_with_monai_on_random_blobs():
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    spacing = (0.7, 0.9, 2.5)
    kji = spacing[::-1]
    a = _blob(1)
    b = _blob(11) | ndimage.binary_dilation(a)
    ours = surface_distances(a, b, spacing)
    ta, tb = (torch.from_numpy(m[None, None].astype(np.float32)) for m in (a, b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's own deprecation notices
        m_hd = monai_metrics.compute_hausdorff_distance(ta, tb, include_background=True, spacing=kji).item()
        m_hd95 = monai_metrics.compute_hausdorff_distance(
            ta, tb, include_background=True, percentile=95, spacing=kji).item()
        m_asd = monai_metrics.compute_average_surface_distance(
            ta, tb, include_background=True, symmetric=True, spacing=kji).item()
        m_nsd = monai_metrics.compute_surface_dice(
            ta, tb, [2.0], include_background=True, spacing=kji, use_subvoxels=True).item()
    diagonal = float(np.linalg.norm(spacing))
    # Same surface voxels and distances: HD and ASD agree to float32 rounding.
    assert ours.hd() == pytest.approx(m_hd, abs=1e-3)
    assert ours.asd() == pytest.approx(m_asd, abs=1e-3)
    # HD95: MONAI takes the larger directed 95th percentile; ours pools both directions (>= 0 difference).
    directed_max = max(np.percentile(ours.pred_to_ref, 95), np.percentile(ours.ref_to_pred, 95))
    assert directed_max == pytest.approx(m_hd95, abs=1e-3)
    assert 0 <= m_hd95 - ours.hd_percentile(95) <= diagonal
    # Surface Dice: exposed-face areas vs MONAI's sub-voxel surface elements.
    assert surface_dice(a, b, spacing, 2.0) == pytest.approx(m_nsd, abs=0.05)


def _organ_maps():
    pred = np.zeros(SHAPE, np.uint8)
    ref = np.zeros(SHAPE, np.uint8)
    ref[5:15, 10:30, 10:40] = 1
    pred[5:15, 10:30, 12:42] = 1  # organ 1 moved 2 voxels in i (1.6 mm)
    ref[20:30, 40:60, 50:80] = 2
    pred[20:30, 40:60, 50:80] = 2  # organ 2 identical
    ref[32:36, 5:9, 5:9] = 3  # organ 3 missed by pred
    return pred, ref


def test_organ_table_label_maps_and_dicts():
    pred, ref = _organ_maps()
    table = organ_table(pred, ref, SPACING, labels={1: "Liver", 2: "Spleen", 3: "Pancreas", 4: "Absent"})
    rows = {r["organ"]: r for r in table.rows()}
    assert list(rows) == ["Liver", "Spleen", "Pancreas", "mean"]  # organ 4 is empty in both: no row
    assert rows["Liver"]["dice"] == pytest.approx(2 * 28 / 60)
    assert rows["Liver"]["hd95_mm"] == pytest.approx(1.6)
    assert rows["Liver"]["surface_dice_2mm"] == 1.0
    assert rows["Liver"]["volume_ref_ml"] == pytest.approx(10 * 20 * 30 * np.prod(SPACING) / 1000)
    assert rows["Spleen"]["dice"] == 1.0 and rows["Spleen"]["hd95_mm"] == 0.0
    assert rows["Pancreas"]["dice"] == 0.0 and rows["Pancreas"]["hd95_mm"] == float("inf")
    assert rows["Pancreas"]["volume_pred_ml"] == 0.0
    assert rows["mean"]["dice"] == pytest.approx((2 * 28 / 60 + 1 + 0) / 3)
    assert rows["mean"]["hd95_mm"] == pytest.approx(0.8)  # the missed organ's inf is left out
    assert rows["mean"]["volume_pred_ml"] is None
    # Dicts of masks give the same table; default labels are named by value.
    masks = {n: [(pred == v), (ref == v)] for v, n in ((1, "Liver"), (2, "Spleen"), (3, "Pancreas"))}
    from_dicts = organ_table({n: Volume(p.astype(np.uint8), SPACING) for n, (p, _) in masks.items()},
                             {n: r for n, (_, r) in masks.items()}, tolerance_mm=1.0)
    by_label = organ_table(pred, ref, SPACING, tolerance_mm=1.0)
    assert by_label.columns["organ"] == ["1", "2", "3", "mean"]
    assert from_dicts.columns["surface_dice_1mm"] == pytest.approx(by_label.columns["surface_dice_1mm"])
    assert from_dicts.columns["surface_dice_1mm"][0] < 1.0


def test_cli_eval_seg(tmp_path, capsys):
    pred, ref = _organ_maps()
    write_volume(Volume(pred, SPACING), tmp_path / "pred.nrrd")
    write_volume(Volume(ref, SPACING), tmp_path / "gt.nrrd")
    files = [str(tmp_path / "pred.nrrd"), str(tmp_path / "gt.nrrd")]
    assert main(["eval", "seg", *files, "--labels", "1=Liver", "2"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["organ"] for r in rows] == ["Liver", "2", "mean"]
    assert float(rows[0]["hd95_mm"]) == pytest.approx(1.6)
    assert main(["eval", "seg", *files, "--json", "--tolerance", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[2]["hd95_mm"] == "inf" and out[0]["surface_dice_1mm"] < 1.0
    assert main(["eval", "seg", *files, "--labels", "a"]) == 2
    assert "--labels" in capsys.readouterr().err


def test_hn_interobserver_one_scan(shared):
    from clinseg.datasets.hn_oar import read_hn_oar

    root = shared / "data" / "hn_oar_masks"
    if not root.is_dir():
        pytest.skip(f"{root} absent (real H&N masks of two annotators)")
    case = read_hn_oar(root)[0]
    organs = ["Mandible", "Brainstem", "Parotid L", "Parotid R"]
    table = organ_table(case.load("radiographer", organs), case.load("oncologist", organs), tolerance_mm=2.0)
    rows = {r["organ"]: r for r in table.rows()}
    assert list(rows) == [*organs, "mean"]
    assert rows["Mandible"]["dice"] > 0.8 and rows["Mandible"]["surface_dice_2mm"] > 0.9
    assert 20 < rows["Mandible"]["volume_ref_ml"] < 150
    for organ in organs:
        assert 0.6 < rows[organ]["dice"] < 1.0
        assert 0 < rows[organ]["hd95_mm"] < 15
        assert 0.5 < rows[organ]["surface_dice_2mm"] <= 1.0
