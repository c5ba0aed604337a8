"""A registered 2.5-D stroke network (D-UNet family) over a whole volume, slice stack by slice stack.

The networks read four adjacent axial slices (k-2, k-1, k, k+1) of one sequence and predict slice k, so the
whole volume is covered by one stack per slice (no 3-D windows to blend). The image is resampled to the
card's in-plane spacing (slices stay native), divided by the brain's median intensity, set to zero outside
the brain and padded to a multiple of 16; the probability is resampled back to the native grid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...engine import select_device
from ...nets.stroke import DIVISOR, slice_stacks
from ...preprocess import resample_to
from ...progress import CancelToken, ProgressCallback, ProgressTracker
from ...volume import Volume

BATCH = 8


def normalised_input(array: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The network's input: intensity / brain median, zero outside the brain (what training used too)."""
    values = array[brain]
    reference = float(np.median(values)) if values.size else 1.0
    return np.where(brain, array / max(reference, 1e-6), 0.0).astype(np.float32)


def working_grid(volume: Volume, in_plane_mm: float) -> Volume:
    """A grid over the same field of view with ``in_plane_mm`` pixels and the native slices."""
    ni, nj, nk = volume.size_ijk
    si, sj, sk = volume.spacing
    size = (max(1, round(ni * si / in_plane_mm)), max(1, round(nj * sj / in_plane_mm)))
    centre = volume.index_to_physical((np.array([ni, nj, nk]) - 1) / 2)
    spacing = np.array([in_plane_mm, in_plane_mm, sk])
    origin = centre - volume.direction @ (spacing * (np.array([size[0], size[1], nk]) - 1) / 2)
    return Volume(np.zeros((nk, size[1], size[0]), np.float32), tuple(spacing), tuple(origin), volume.direction)


def stack_probability(network: torch.nn.Module, image: np.ndarray, device: torch.device,
                      progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> np.ndarray:
    """Sigmoid output of ``network`` for every slice of a (K, J, I) image, same shape."""
    nk, nj, ni = image.shape
    pj, pi = (-nj) % DIVISOR, (-ni) % DIVISOR
    volume = F.pad(torch.from_numpy(image), (0, pi, 0, pj))
    stacks = slice_stacks(volume)
    out = np.zeros((nk, nj + pj, ni + pi), np.float32)
    tracker = ProgressTracker("lesion network", -(-nk // BATCH), progress)
    network.eval()
    with torch.inference_mode():
        for start in range(0, nk, BATCH):
            if cancel is not None:
                cancel.check("stroke")
            batch = stacks[start:start + BATCH].to(device)
            logits = network(batch).logits[:, 0]
            out[start:start + BATCH] = torch.sigmoid(logits.float()).cpu().numpy()
            tracker.step()
    return out[:, :nj, :ni]


def lesion_probability(image: Volume, brain: np.ndarray, model_id: str, device: str = "auto",
                       progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> tuple[
                           np.ndarray, float]:
    """Lesion probability on ``image``'s grid from model ``model_id`` and the card's threshold."""
    from ...registry import get_registry

    registry = get_registry()
    card = registry.card(model_id)
    torch_device = select_device(device)
    network = registry.load_network(model_id, torch_device)
    in_plane = float(card.inputs["spacing"][0]) if isinstance(card.inputs["spacing"], list) else None
    brain_volume = image.with_array(brain.astype(np.uint8))
    if in_plane is None:
        seen, seen_brain = image, brain
    else:
        grid = working_grid(image, in_plane)
        seen = resample_to(image.with_array(image.array.astype(np.float32)), grid, order=1)
        seen_brain = resample_to(brain_volume, grid, order=0).array > 0
    probability = stack_probability(network, normalised_input(seen.array, seen_brain), torch_device, progress,
                                    cancel)
    if in_plane is not None:
        probability = resample_to(seen.with_array(probability), image, order=1).array
    return probability * brain, float(card.inference.get("threshold", 0.5))
