"""Memory guard for sliding-window inference: estimate what a run needs and pick a mode that fits.

Modes, tried in order until one fits:

* ``full``: input, stitching buffer and network all on the compute device, configured batch size;
* ``batch1``: as ``full`` with one patch per forward pass (fewer activations);
* ``host-stitching``: the network runs on the accelerator, the input and the stitching buffer stay in
  host RAM and patches travel per batch (only for CUDA/MPS, where device memory is the scarce one);
  the configured batch is kept when its activations fit, else batch 1.

When none fits, ``ResourceError`` names the smallest need and the limit in GB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ResourceError
from .devices import device_available_bytes, host_available_bytes

# Only this share of measured free memory is planned for: torch's allocator, fragmentation and the rest of
# the process need headroom. Explicit limits (tests, user settings) are used as given.
MEASURED_HEADROOM = 0.85
FLOAT32 = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, split by what can move, and the limits it is checked against."""

    bytes_output_buffers: int  # stitching accumulator (out_channels x padded volume, float32)
    bytes_patch_activations: int  # network weights + activations + patch tensors at ``batch_size``
    device_limit: int
    host_limit: int
    bytes_input: int = 0  # the image as float32 (padded)
    bytes_params: int = 0  # network weights (part of bytes_patch_activations)
    bytes_per_patch: int = 0  # activations and patch tensors of one patch
    batch_size: int = 1

    def activations_for(self, batch_size: int) -> int:
        """Weights plus activations when ``batch_size`` patches go through the network at once."""
        return self.bytes_params + batch_size * self.bytes_per_patch


@dataclass(frozen=True)
class MemoryPlan:
    """The mode chosen for a run and why (kept on the inferer as ``last_plan``)."""

    mode: str  # "full" | "batch1" | "host-stitching"
    batch_size: int
    compute_device: torch.device
    stitch_device: torch.device
    estimate: MemoryEstimate
    bytes_device: int  # planned peak on the compute device
    bytes_host: int  # planned peak in host RAM

    def describe(self) -> str:
        return (
            f"{self.mode}, batch {self.batch_size}, network on {self.compute_device}, stitching on "
            f"{self.stitch_device}: ~{gb(self.bytes_device)} GB device / ~{gb(self.bytes_host)} GB host"
        )


def gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f}"


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters()) + sum(b.numel() for b in network.buffers())


def guess_activation_factor(network: nn.Module) -> int:
    """Rough float count alive per patch voxel during one forward pass: 20 x the first 3-D conv's width.

    Calibrated on CPU with the airway U-Net (first conv 8 wide): one forward on a 64^3 / 96^3 patch raised the
    process RSS by 230 / 160 floats per voxel (skip features, concatenations, oneDNN scratch). Pass
    ``activation_factor`` to the inferer when a network is known to differ.
    """
    for module in network.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            return max(32, 20 * int(module.out_channels))
    return 64


def guess_out_channels(network: nn.Module) -> int | None:
    """Channels of the last 3-D convolution registered (the usual segmentation head), if any."""
    last = None
    for module in network.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            last = module
    return int(last.out_channels) if last is not None else None


def estimate_memory(
    image_shape: Sequence[int],
    out_channels: int,
    patch_size: Sequence[int],
    batch_size: int,
    *,
    param_count: int = 0,
    activation_factor: float = 64,
    activation_bytes: int = FLOAT32,
    device: torch.device | str = "cpu",
    memory_limit_bytes: int | None = None,
    device_memory_limit_bytes: int | None = None,
) -> MemoryEstimate:
    """Estimate the memory of one sliding-window run on an image of ``image_shape`` ((C,)D,H,W).

    ``activation_factor`` is the number of activation values alive per patch voxel (see
    ``guess_activation_factor``), ``activation_bytes`` 2 under float16/bfloat16 autocast.
    ``memory_limit_bytes`` overrides the host limit (and the device limit on CPU); without it the limits
    are the free memory measured now, less headroom.
    """
    shape = tuple(int(s) for s in image_shape)
    in_channels, spatial = (1, shape) if len(shape) == 3 else (shape[0], shape[1:])
    patch = tuple(int(p) for p in patch_size)
    padded = [max(s, p) for s, p in zip(spatial, patch)]
    n_voxels = math.prod(padded)
    patch_voxels = math.prod(patch)

    bytes_output = int(out_channels) * n_voxels * FLOAT32
    bytes_input = in_channels * n_voxels * FLOAT32
    # Per patch: activations, the gathered input patch, the prediction, its weighted copy and one flipped copy.
    per_patch = int(patch_voxels * (activation_factor * activation_bytes + (in_channels + 3 * out_channels) * FLOAT32))
    bytes_params = int(param_count) * FLOAT32

    device = torch.device(device)
    if memory_limit_bytes is not None:
        host_limit = int(memory_limit_bytes)
    else:
        host_limit = int(host_available_bytes() * MEASURED_HEADROOM)
    if device.type == "cpu":
        device_limit = host_limit
    elif device_memory_limit_bytes is not None:
        device_limit = int(device_memory_limit_bytes)
    else:
        device_limit = int(device_available_bytes(device) * MEASURED_HEADROOM)
    return MemoryEstimate(
        bytes_output_buffers=bytes_output,
        bytes_patch_activations=bytes_params + int(batch_size) * per_patch,
        device_limit=device_limit,
        host_limit=host_limit,
        bytes_input=bytes_input,
        bytes_params=bytes_params,
        bytes_per_patch=per_patch,
        batch_size=int(batch_size),
    )


def plan_memory(estimate: MemoryEstimate, device: torch.device | str) -> MemoryPlan:
    """Pick the first mode whose device and host needs fit the estimate's limits, else raise ``ResourceError``."""
    device = torch.device(device)
    cpu = torch.device("cpu")
    e = estimate
    batch = e.batch_size
    on_device = e.bytes_input + e.bytes_output_buffers
    batches = (batch, 1) if batch > 1 else (1,)
    candidates: list[tuple[str, int, torch.device, int, int]] = []  # mode, batch, stitch device, device/host bytes
    for b in batches:
        need = on_device + e.activations_for(b)
        # A result computed on an accelerator is copied to the host at the end; on CPU both are one pool.
        candidates.append(
            ("full" if b == batch else "batch1", b, device, need, need if device.type == "cpu" else on_device)
        )
    if device.type != "cpu":
        for b in batches:
            candidates.append(("host-stitching", b, cpu, e.activations_for(b), on_device))

    for mode, b, stitch, need_device, need_host in candidates:
        if need_device <= e.device_limit and need_host <= e.host_limit:
            return MemoryPlan(mode, b, device, stitch, e, need_device, need_host)

    smallest = candidates[-1]
    if device.type == "cpu":
        need, limit, where = smallest[3], e.device_limit, "RAM"
    elif smallest[3] > e.device_limit:
        need, limit, where = smallest[3], e.device_limit, f"{device.type.upper()} memory"
    else:
        need, limit, where = smallest[4], e.host_limit, "RAM"
    raise ResourceError(
        "memory",
        f"inference needs about {gb(need)} GB of {where} (output buffers {gb(e.bytes_output_buffers)} GB, "
        f"input {gb(e.bytes_input)} GB, patch activations {gb(e.activations_for(smallest[1]))} GB at batch "
        f"{smallest[1]}) but the limit is {gb(limit)} GB; crop the image or use a smaller patch",
    )
