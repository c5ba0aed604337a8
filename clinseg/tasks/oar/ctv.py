"""The learned CTV (document 002's network, ``clinseg train ctv``) on a head & neck CT: a mask on the CT's grid.

The CT is resampled to the card's spacing, windowed as in training, run through the sliding-window engine with
the card's patch over the body's box only (a CTV lies inside the body; the air around a head costs half the
patches); the sigmoid probability comes back to the CT grid (linear) and is thresholded; the card's
``largest_component`` op keeps the one connected CTV a primary tumour gives.
"""

from __future__ import annotations

import numpy as np
import torch

from ...engine import SlidingWindowInferer, select_device
from ...errors import InputError
from ...post.components import largest_component
from ...preprocess import bounding_box, crop, resample, resample_to, window
from ...progress import CancelToken, ProgressCallback
from ...registry import get_registry
from ...volume import Volume

DEFAULT_CTV_MODEL = "ctv-unet-phantom"
AIR_HU = -1000.0
BODY_HU = -400.0  # as the margin tool's body outline


def predict_ctv(ct: Volume, model_id: str = DEFAULT_CTV_MODEL, device: str = "auto",
                progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> Volume:
    """The learned CTV of ``ct`` as a uint8 mask on its grid (all zero when the model finds none)."""
    registry = get_registry()
    card = registry.card(model_id)
    if card.task != "ctv":
        raise InputError("--ctv-model", f"'{model_id}' is a {card.task} model, not a CTV model")
    torch_device = select_device(device)
    network = registry.load_network(model_id, torch_device)
    inputs, inference = card.inputs, card.inference
    seen = resample(ct, card.working_spacing(ct.spacing) or ct.spacing, order=1, default_value=AIR_HU)
    box = bounding_box(seen.array > BODY_HU, 2)
    if box is None:
        return ct.with_array(np.zeros(ct.shape, np.uint8), name="CTV")
    seen = crop(seen, box)
    low, high = inputs["intensity"]["clip"]
    inferer = SlidingWindowInferer(tuple(inputs["patch_size"]), overlap=float(inputs["overlap"]),
                                   batch_size=int(inference.get("batch_size", 1)),
                                   precision=inference.get("precision", "float32"), device=torch_device)
    logits = inferer(window(seen.array, low, high), network, progress=progress, cancel=cancel)
    prob = torch.sigmoid(logits[0]).numpy()
    up = resample_to(seen.with_array(prob), ct, order=1, default_value=0.0).array
    mask = up > float(inference.get("threshold", 0.5))
    if mask.any() and any(op.get("op") == "largest_component" for op in card.postprocessing):
        mask = largest_component(mask)
    return ct.with_array(mask.astype(np.uint8), name="CTV")
