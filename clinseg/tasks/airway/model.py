"""Airway segmentation with a registered network through the sliding-window engine."""

from __future__ import annotations

import numpy as np
import torch

from ...anatomy.lungs import ChestMasks
from ...engine import SlidingWindowInferer, select_device
from ...preprocess import window
from ...progress import CancelToken, ProgressCallback
from ...registry import get_registry
from ...volume import Volume

CROP_MARGIN_MM = 10.0


def lung_box(ct: Volume, masks: ChestMasks, margin_mm: float = CROP_MARGIN_MM) -> tuple[slice, slice, slice]:
    """Bounding box of lungs + airways with a margin (array order), as the thesis crops."""
    nz = np.nonzero(masks.lungs)
    spacing = ct.spacing[::-1]
    box = []
    for axis, coords in enumerate(nz):
        m = int(np.ceil(margin_mm / spacing[axis]))
        box.append(slice(max(0, int(coords.min()) - m), min(ct.shape[axis], int(coords.max()) + 1 + m)))
    return tuple(box)


def segment_airway_model(
    ct: Volume,
    masks: ChestMasks,
    model_id: str,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """Binary airway mask on the CT grid from model ``model_id``."""
    registry = get_registry()
    card = registry.card(model_id)
    inputs = card.inputs
    torch_device = select_device(device)
    network = registry.load_network(model_id, torch_device)

    box = lung_box(ct, masks)
    low, high = inputs["intensity"]["clip"]
    image = window(ct.array[box], low, high)
    inferer = SlidingWindowInferer(
        patch_size=tuple(inputs["patch_size"]),
        overlap=float(inputs.get("overlap", 0.25)),
        batch_size=int(inputs.get("batch_size", 1)),
        device=torch_device,
        blending=inputs.get("blending", "gaussian"),
    )
    output = _output_spec(card)
    if output["blend"] == "probability":
        # Upstream recipes (e.g. the ATM'22 baseline) blend sigmoid outputs, not logits.
        network = torch.nn.Sequential(network, torch.nn.Sigmoid())
    blended = inferer(image, network, progress=progress, cancel=cancel)
    channel = int(output.get("channel", blended.shape[0] - 1))
    probability = blended[channel] if output["blend"] == "probability" else torch.sigmoid(blended[channel])
    threshold = float(output.get("threshold", 0.5))
    mask = np.zeros(ct.shape, dtype=bool)
    mask[box] = (probability > threshold).numpy()
    return mask


def _output_spec(card) -> dict:
    """How to turn network outputs into a mask: card ``output`` with defaults."""
    spec = {"activation": "sigmoid", "blend": "logits", "threshold": 0.5}
    spec.update(getattr(card, "output", None) or {})
    return spec
