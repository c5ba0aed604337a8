"""The one engine rule every task pipeline follows (``clinseg.tasks.engines.resolve_engine``)."""

from __future__ import annotations

import pytest

from clinseg.errors import InputError, ModelError
from clinseg.tasks.engines import resolve_engine


def test_classical_auto_and_model_choices(clinseg_home):
    assert resolve_engine("airway", "classical", None, None) == ("classical", None)
    assert resolve_engine("airway", "auto", None, None) == ("classical", None)
    # Shipped in the package, so installed: auto takes the default model when it is given one.
    assert resolve_engine("airway", "auto", None, "airway-unet-phantom") == ("model", "airway-unet-phantom")
    assert resolve_engine("stroke", "model", "stroke-dunet-phantom", None) == ("model", "stroke-dunet-phantom")
    # Not installed (the ATM'22 weights are downloaded on request): auto falls back, model refuses.
    assert resolve_engine("airway", "auto", None, "atm22-baseline") == ("classical", None)
    with pytest.raises(InputError, match=r"not installed \(run: clinseg models install atm22-baseline\)"):
        resolve_engine("airway", "model", "atm22-baseline", None)


def test_refusals_name_the_problem(clinseg_home):
    with pytest.raises(InputError, match="unknown engine 'fast'"):
        resolve_engine("nodule", "fast", None, None)
    with pytest.raises(InputError, match="needs a model id"):
        resolve_engine("nodule", "model", None, None)
    with pytest.raises(InputError, match="is a airway model, not a stroke model"):
        resolve_engine("stroke", "model", "airway-unet-phantom", None)
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        resolve_engine("stroke", "model", "nope", None)
    # A task without a classical engine: no fallback, its default model is required.
    with pytest.raises(InputError, match="has no 'classical' engine"):
        resolve_engine("oar", "classical", None, "oar-unet-phantom", engines=("auto", "model"))
    assert resolve_engine("oar", "auto", None, "oar-unet-phantom", engines=("auto", "model")) == \
        ("model", "oar-unet-phantom")
