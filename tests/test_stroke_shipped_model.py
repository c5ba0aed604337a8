"""The shipped stroke-dunet-phantom model: found by the registry, hash-checked, segments a held-out phantom."""

from __future__ import annotations

import pytest
import torch

from clinseg.metrics.lesion import case_metrics
from clinseg.phantoms.brain import generate_brain
from clinseg.registry import get_registry
from clinseg.tasks.stroke import StrokeOptions, run_stroke

MODEL = "stroke-dunet-phantom"


def test_card_records_the_network_and_is_not_the_default():
    from clinseg.tasks.stroke.pipeline import DEFAULT_MODEL

    registry = get_registry()
    card = registry.card(MODEL)
    network = registry.load_network(MODEL, "cpu")  # verifies the SHA-256
    assert card.parameter_count == sum(p.numel() for p in network.parameters()) == 596875
    assert card.inputs["modalities"] == ["DWI"] and DEFAULT_MODEL["acute"] is None


def test_model_engine_on_a_held_out_phantom(clinseg_home):
    torch.set_num_threads(2)
    ph = generate_brain(1004, spacing=(2.0, 2.0, 2.0), contrasts=("DWI", "ADC"), lesion="mca")
    result = run_stroke({"dwi": ph.images["DWI"], "adc": ph.images["ADC"]},
                        StrokeOptions(engine="model", model_id=MODEL, device="cpu"))
    assert result.metrics["engine"] == "model"
    m = case_metrics(result.labelmap.array, ph.lesion.array, ph.lesion.spacing)
    assert m["dice"] >= 0.85  # bench: 0.926 on this case
    assert result.metrics["lesion_volume_ml"] == pytest.approx(ph.lesion_volume_ml, rel=0.2)


def test_model_for_another_mode_is_refused():
    from clinseg.errors import InputError

    t1 = generate_brain(3, spacing=(3.0, 3.0, 3.0), contrasts=("T1",), stage="chronic").images["T1"]
    with pytest.raises(InputError, match="not the chronic mode's T1"):
        run_stroke({"t1": t1}, StrokeOptions(engine="model", model_id=MODEL))
