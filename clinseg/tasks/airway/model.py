"""Airway segmentation with a registered network through the sliding-window engine."""

from __future__ import annotations

import numpy as np
import torch

from ...anatomy.lungs import ChestMasks, lung_box
from ...engine import SlidingWindowInferer, select_device
from ...preprocess import window
from ...progress import CancelToken, ProgressCallback
from ...registry import get_registry
from ...volume import Volume


def segment_airway_model(
    ct: Volume,
    masks: ChestMasks | None,
    model_id: str,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """Binary airway mask on the CT grid from model ``model_id``.

    The card's ``inputs.crop`` says where the network runs: ``lungs`` (the lung box, as the thesis crops) or
    ``none`` (the whole volume, as recipes validated on whole scans expect); no masks also means whole volume.
    """
    registry = get_registry()
    card = registry.card(model_id)
    inputs, inference = card.inputs, card.inference
    torch_device = select_device(device)
    network = registry.load_network(model_id, torch_device)

    crop_to_lungs = masks is not None and inputs.get("crop", "lungs") == "lungs"
    box = lung_box(ct, masks) if crop_to_lungs else tuple(slice(0, n) for n in ct.shape)
    low, high = inputs["intensity"]["clip"]
    image = window(ct.array[box], low, high)
    channel = int(inference.get("foreground_channel", 0))
    blend_probability = inference.get("blend", "logits") == "probability"
    if blend_probability:
        # Upstream recipes such as the ATM'22 baseline blend sigmoid outputs, not logits.
        network = torch.nn.Sequential(network, torch.nn.Sigmoid())
    inferer = SlidingWindowInferer(
        tuple(inputs["patch_size"]),
        overlap=float(inputs.get("overlap", 0.25)),
        placement=inference.get("placement", "even"),
        precision=inference.get("precision", "auto"),
        batch_size=int(inference.get("batch_size", 2)),
        sigma_scale=float(inference.get("gaussian_sigma_scale", 0.125)),
        mirror_axes=tuple(inference.get("mirror_axes", ())),
        keep_channels=[channel],
        device=torch_device,
    )
    blended = inferer(image, network, progress=progress, cancel=cancel)[0]
    probability = blended if blend_probability else torch.sigmoid(blended)
    mask = np.zeros(ct.shape, dtype=bool)
    mask[box] = (probability > float(inference.get("threshold", 0.5))).numpy()
    return mask
