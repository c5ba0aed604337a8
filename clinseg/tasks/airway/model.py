"""Airway segmentation with a registered network through the sliding-window engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...anatomy.lungs import ChestMasks, lung_box
from ...engine import SlidingWindowInferer, select_device
from ...preprocess import CT_AIR_HU, crop, resample, resample_to, window
from ...progress import CancelToken, ProgressCallback
from ...registry import get_registry
from ...volume import Volume


@dataclass(frozen=True)
class AirwayProbability:
    """A network's airway probability inside ``box`` of the CT grid, with the threshold its card sets."""

    box: tuple[slice, ...]
    values: np.ndarray
    threshold: float

    def mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """Binary airway mask on a CT grid of ``shape``."""
        out = np.zeros(shape, dtype=bool)
        out[self.box] = self.values > self.threshold
        return out


def airway_probability(
    ct: Volume,
    masks: ChestMasks | None,
    model_id: str,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> AirwayProbability:
    """Airway probability from model ``model_id`` on the CT grid; ``.mask(ct.shape)`` thresholds it.

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
    region = crop(ct, box)
    spacing = card.working_spacing(region.spacing)
    seen = region if spacing is None else resample(region, spacing, order=1, default_value=CT_AIR_HU)
    low, high = inputs["intensity"]["clip"]
    image = window(seen.array, low, high)
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
    probability = (blended if blend_probability else torch.sigmoid(blended)).numpy()
    if spacing is not None:
        probability = resample_to(seen.with_array(probability), region, order=1).array
    return AirwayProbability(box, probability, float(inference.get("threshold", 0.5)))
