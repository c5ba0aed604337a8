"""``clinseg airway --model atm22-baseline`` against the ATM'22 baseline's upstream recipe (MONAI's
sliding_window_inference over the whole volume at MONAI's window positions, sigmoid blending, channel 1 > 0.5,
largest 26-component).

The model card makes the pipeline run that recipe (whole volume, ``stride`` placement), so the pipeline's mask
must match the recipe's (the only remaining difference is bfloat16 vs float32 arithmetic on CPUs with native
bfloat16). Slow on a busy 2-core machine. Skips when /work/shared (the official weights) is absent.
"""

from __future__ import annotations

import json

import pytest
from helpers_airway import load_bench

from clinseg.cli import main
from clinseg.io import read_segmentation, write_volume
from clinseg.phantoms import generate_chest
from clinseg.registry import get_registry


@pytest.fixture(scope="module")
def baseline(shared, tmp_path_factory):
    """The bench helpers, with the official weights imported into a fresh CLINSEG_HOME."""
    weights = shared / "models" / "atm22_baseline" / "weight.pth"
    if not weights.is_file():
        pytest.skip("ATM'22 baseline weight.pth is absent")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLINSEG_HOME", str(tmp_path_factory.mktemp("home")))
        bench = load_bench("atm22_equivalence")
        assert bench.ensure_baseline(weights)
        yield bench


@pytest.fixture(scope="module")
def cli_run(baseline, tmp_path_factory):
    """The small phantom, and ``clinseg airway CT --model atm22-baseline -o OUT`` run on it."""
    phantom = generate_chest(seed=3, preset="small")
    folder = tmp_path_factory.mktemp("atm22")
    ct_path = write_volume(phantom.ct, folder / "ct.nii.gz")
    out = folder / "out"
    code = main(["airway", str(ct_path), "--model", "atm22-baseline", "-o", str(out), "--no-preview",
                 "--progress", "none"])
    assert code == 0
    return phantom, out


@pytest.mark.slow
def test_cli_with_the_baseline_writes_mask_tree_and_summary(cli_run):
    _, out = cli_run
    names = {p.name for p in out.iterdir()}
    assert {"airway.seg.nrrd", "summary.json"} <= names
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    assert metrics["engine"] == "model" and metrics["engine_report"]["model"] == "atm22-baseline"
    assert "segmentation" in metrics["timings_s"]
    if metrics["tree"]["branches"]:
        curves = json.loads((out / "centerlines.mrk.json").read_text())["markups"]
        assert len(curves) == metrics["tree"]["branches"]
    else:  # the baseline found too little on this phantom to trace: the mask is still written, with the reason
        assert metrics["warnings"][0].startswith("no centerline tree")
    mask = read_segmentation(out / "airway.seg.nrrd")[0].array > 0
    assert mask.any() and abs(metrics["airway_volume_ml"] - mask.sum() * 1.4**3 / 1000) < 0.01


@pytest.mark.slow
def test_pipeline_mask_matches_the_upstream_recipe(baseline, cli_run):
    """Same windows, same blending, same post-processing: Dice >= 0.95 required (the issue's bar)."""
    from clinseg.anatomy.lungs import chest_masks
    from clinseg.post.components import fill_holes, largest_component
    from clinseg.tasks.airway.model import airway_probability

    phantom, _ = cli_run
    network = get_registry().load_network(baseline.MODEL_ID)
    raw_reference = baseline.upstream_probability(phantom.ct, network) > 0.5
    reference = baseline.keep_largest(raw_reference)
    raw_ours = airway_probability(phantom.ct, chest_masks(phantom.ct), baseline.MODEL_ID).mask(phantom.ct.shape)
    ours = fill_holes(largest_component(raw_ours))
    raw_dice, dice = baseline.dice(raw_ours, raw_reference), baseline.dice(ours, reference)
    print(f"pipeline vs upstream recipe: raw Dice {raw_dice:.4f}, after largest component {dice:.4f}")
    assert raw_reference.sum() > 500
    assert raw_dice >= 0.98 and dice >= 0.95
