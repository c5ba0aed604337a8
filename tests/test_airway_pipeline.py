"""AirwaySeg end to end with the classical engine (``clinseg airway`` through ``clinseg.cli.main``), the
``--from-mask`` update, and the refusals of unusable inputs (nothing written on failure)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from clinseg.cli import main
from clinseg.errors import InputError
from clinseg.io import read_segmentation, read_volume, write_volume
from clinseg.metrics.airway import airway_metrics
from clinseg.phantoms import LOBAR_NAMES, generate_chest
from clinseg.tasks.airway import AirwayOptions, run_airway
from clinseg.volume import Volume

SCOPE_MM = 6.0


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    """A small chest phantom (160x160x128 at 1.4 mm) written as NIfTI, with its largest nodule."""
    phantom = generate_chest(seed=11, preset="small")
    folder = tmp_path_factory.mktemp("chest")
    path = write_volume(phantom.ct, folder / "chest.nii.gz")
    nodule = max(phantom.nodules, key=lambda n: n.diameter_mm)
    return phantom, path, nodule


@pytest.fixture(scope="module")
def classical_run(chest, tmp_path_factory):
    """``clinseg airway CT --engine classical --target <largest nodule> --scope-diameter 6`` once per module."""
    _, path, nodule = chest
    out = tmp_path_factory.mktemp("run") / "out"
    target = ",".join(f"{v:.2f}" for v in nodule.center_lps)
    code = main(["airway", str(path), "-o", str(out), "--engine", "classical", f"--target={target}",
                 "--scope-diameter", str(SCOPE_MM), "--progress", "none"])
    assert code == 0
    return out, json.loads((out / "summary.json").read_text())


def test_cli_writes_every_output(classical_run):
    out, _ = classical_run
    names = {p.name for p in out.iterdir()}
    expected = {"airway.seg.nrrd", "centerlines.mrk.json", "route.mrk.json", "branches.csv", "route.csv",
                "summary.json", "preview.png", "tree3d.png"}
    assert expected <= names
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]  # no temporaries left behind


def test_segmentation_matches_ground_truth(chest, classical_run):
    phantom, _, _ = chest
    out, _ = classical_run
    mask, segments = read_segmentation(out / "airway.seg.nrrd")
    assert [s.name for s in segments] == ["Airway"]
    assert mask.shape == phantom.ct.shape
    np.testing.assert_allclose(mask.origin, phantom.ct.origin, atol=1e-3)
    metrics = airway_metrics(mask.array > 0, phantom.airway.array, phantom.ct.spacing)
    assert metrics["dice"] > 0.6 and metrics["td"] > 0.6  # measured 0.68 / 0.71 on this phantom


def test_tree_is_named_down_to_lobar_bronchi(classical_run):
    _, summary = classical_run
    tree = summary["metrics"]["tree"]
    named = set(tree["named"])
    assert {"Trachea", "RightMainBronchus", "LeftMainBronchus"} <= named
    assert len(named & set(LOBAR_NAMES)) >= 4
    assert tree["branches"] >= 20 and tree["max_generation"] >= 4
    curves = json.loads((Path(classical_run[0]) / "centerlines.mrk.json").read_text())["markups"]
    assert len(curves) == tree["branches"]


def test_route_reaches_the_nodule_and_reports_the_scope_stop(chest, classical_run):
    _, _, nodule = chest
    _, summary = classical_run
    route = summary["metrics"]["route"]
    assert route["branch_sequence"][:2] in (["Trachea", "RightMainBronchus"], ["Trachea", "LeftMainBronchus"])
    end = np.asarray(route["end_lps"])
    assert np.linalg.norm(end - nodule.center_lps) == pytest.approx(route["remaining_mm"], abs=0.5)
    # The route ends at the centerline point nearest the target.
    out, _ = classical_run
    curves = json.loads((out / "centerlines.mrk.json").read_text())["markups"]
    points = np.array([p["position"] for c in curves for p in c["controlPoints"]])
    assert route["remaining_mm"] <= np.linalg.norm(points - nodule.center_lps, axis=1).min() + 0.5
    stop = route["scope_stop"]
    assert route["scope_diameter_mm"] == SCOPE_MM
    assert stop is not None and stop["lumen_diameter_mm"] < SCOPE_MM
    assert 0 < stop["distance_mm"] < route["path_length_mm"]


def test_from_mask_recomputes_the_same_tree(classical_run, tmp_path):
    out, summary = classical_run
    again = tmp_path / "edited"
    code = main(["airway", "--from-mask", str(out / "airway.seg.nrrd"), "-o", str(again), "--no-preview",
                 "--progress", "none"])
    assert code == 0
    recomputed = json.loads((again / "summary.json").read_text())["metrics"]
    assert recomputed["tree"]["branches"] == summary["metrics"]["tree"]["branches"]
    assert recomputed["tree"]["named"] == summary["metrics"]["tree"]["named"]
    assert "segmentation" not in recomputed["timings_s"]
    assert (again / "airway.seg.nrrd").is_file() and not (again / "preview.png").exists()


@pytest.mark.parametrize("storage", ["RAS", "SPR"])
def test_storage_order_does_not_change_the_airway(chest, classical_run, storage):
    """The same scan stored flipped (RAS) or with permuted, flipped axes (SPR, sagittal slices) as real files
    are: the engine works in patient space, so the airway and its names stay (measured Dice 0.990 / 0.989)."""
    phantom, _, _ = chest
    out, summary = classical_run
    stored = Volume.from_sitk(sitk.DICOMOrient(phantom.ct.to_sitk(), storage), name=f"chest-{storage}")
    assert not np.allclose(stored.direction, phantom.ct.direction)  # really stored differently
    result = run_airway(stored, AirwayOptions(engine="classical"))
    back = sitk.GetArrayFromImage(sitk.DICOMOrient(result.labelmap.to_sitk(), "LPS")) > 0
    first = read_segmentation(out / "airway.seg.nrrd")[0].array > 0
    assert 2 * np.count_nonzero(back & first) / (np.count_nonzero(back) + np.count_nonzero(first)) > 0.97
    assert result.metrics["tree"]["named"] == summary["metrics"]["tree"]["named"]
    assert abs(result.metrics["tree"]["branches"] - summary["metrics"]["tree"]["branches"]) <= 3


def test_far_target_fails_and_writes_nothing(chest, tmp_path, capsys):
    _, path, _ = chest
    out = tmp_path / "out"
    code = main(["airway", str(path), "-o", str(out), "--engine", "classical", "--target", "900,900,900",
                 "--progress", "none"])
    assert code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("clinseg: error:") and "target" in message and "\n" not in message
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name != "out"]  # no temporary sibling left either


def test_non_empty_output_folder_is_refused_without_overwrite(chest, tmp_path, capsys):
    _, path, _ = chest
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["airway", str(path), "-o", str(out), "--engine", "classical", "--progress", "none"])
    assert code == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def _cut_at_carina(phantom, mm: float) -> Volume:
    """The phantom's CT with its top ``mm`` above (below, when negative) the trachea's division point."""
    carina = phantom.branches[0].points_lps[-1]
    top = int(round(phantom.ct.physical_to_index(carina[None])[0][2] + mm / phantom.ct.spacing[2]))
    ct = phantom.ct
    return Volume(np.ascontiguousarray(ct.array[:top]), ct.spacing, ct.origin, ct.direction, "cut.nii.gz")


@pytest.mark.parametrize("engine", ["classical", "airway-unet-phantom"])
def test_scan_starting_below_the_carina_is_refused(chest, engine):
    """Both main bronchi, side by side, at the top of the scan: no trachea to root the tree in, for any engine
    (a network, which needs no seed, would otherwise name a main bronchus 'Trachea')."""
    options = AirwayOptions(engine="classical") if engine == "classical" else AirwayOptions(model_id=engine)
    with pytest.raises(InputError, match="no trachea in the field of view") as error:
        run_airway(_cut_at_carina(chest[0], -10.0), options)
    assert str(error.value).startswith("cut.nii.gz: ")


def test_scan_starting_at_the_division_keeps_the_airway_but_names_no_tree(chest):
    """Cut within a radius of the carina, the trachea leaves the scan on both sides of the division: the tree is
    withheld with the reason, the segmentation is kept; a centimetre higher the tree is named again."""
    phantom = chest[0]
    at_division = run_airway(_cut_at_carina(phantom, -4.0), AirwayOptions(engine="classical"))
    assert at_division.metrics["tree"] == {"branches": 0} and not at_division.curves
    assert "the trachea cannot be told from the main bronchi" in at_division.metrics["warnings"][0]
    assert np.count_nonzero(at_division.labelmap.array) > 5000  # measured 5937 voxels
    higher = run_airway(_cut_at_carina(phantom, 8.0), AirwayOptions(engine="classical"))
    assert {"Trachea", "RightMainBronchus", "LeftMainBronchus"} <= set(higher.metrics["tree"]["named"])


def test_mri_is_refused_mentioning_hounsfield():
    from clinseg.phantoms.brain import generate_brain

    t1 = generate_brain(seed=1, preset="small", contrasts=("T1",)).images["T1"]
    with pytest.raises(InputError, match="Hounsfield"):
        run_airway(t1, AirwayOptions(engine="classical"))


def _abdomen_like() -> Volume:
    """A CT in HU without lungs: soft tissue, fat, a spine, a few bowel gas pockets (< 50 ml), air around."""
    rng = np.random.default_rng(0)
    k, j, i = np.mgrid[:60, :128, :128].astype(np.float32)
    body = ((i - 64) / 58) ** 2 + ((j - 64) / 44) ** 2 < 1
    hu = np.full(body.shape, -1000.0, np.float32)
    hu[body] = -100.0  # fat
    hu[body & (((i - 64) / 48) ** 2 + ((j - 60) / 34) ** 2 < 1)] = 40.0  # organs
    hu[body & (np.hypot(i - 64, j - 96) < 8)] = 700.0  # vertebra
    for ci, cj in ((50, 50), (80, 55), (64, 40)):
        hu[(np.hypot(i - ci, j - cj) < 6) & (np.abs(k - 30) < 10)] = -1000.0  # bowel gas
    hu += rng.normal(0, 10, hu.shape).astype(np.float32)
    return Volume(hu.astype(np.int16), spacing=(1.5, 1.5, 2.0), name="abdomen.nii.gz")


def test_volume_without_lungs_is_refused():
    with pytest.raises(InputError, match="no lungs") as error:
        run_airway(_abdomen_like(), AirwayOptions(engine="classical"))
    assert str(error.value).startswith("abdomen.nii.gz")


@pytest.mark.parametrize("shape", [(1, 128, 128), (12, 128, 128)])
def test_flat_or_tiny_volume_is_refused(shape):
    ct = Volume(np.full(shape, -1000, np.int16), spacing=(0.7, 0.7, 1.0), name="thin.nrrd")
    with pytest.raises(InputError, match="too small|3-D"):
        run_airway(ct, AirwayOptions(engine="classical"))


def test_absurd_spacing_is_refused_on_reading(tmp_path):
    image = sitk.GetImageFromArray(np.full((20, 32, 32), -1000, np.int16))
    image.SetSpacing((50.0, 50.0, 50.0))
    path = tmp_path / "huge.nrrd"
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match="absurd voxel spacing") as error:
        read_volume(path)
    assert "huge.nrrd" in str(error.value)
