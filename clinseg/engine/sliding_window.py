"""Sliding-window (patch-wise) inference of a 3-D segmentation network over a whole volume.

Memory notes: the stitching buffer is the only full-size array besides the input. The sum of blending weights
is never stored as a volume: the window grid is a Cartesian product of per-axis starts and the weights are a
product of per-axis profiles, so the weight sum is the outer product of three 1-D sums and normalising is two
in-place multiplications at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, ProgressTracker
from .devices import select_device, select_precision
from .memory import (
    MemoryPlan,
    count_parameters,
    estimate_memory,
    guess_activation_factor,
    guess_out_channels,
    plan_memory,
)
from .weighting import axis_profiles, monai_importance

_FINITE_CHECK_SLAB = 32  # z-slices per isfinite() chunk, so the check never allocates a full-size mask


class _LowPrecisionFailed(Exception):
    """The first reduced-precision forward pass raised: an ``auto`` run starts again in float32."""


PLACEMENTS = ("even", "stride")


def window_starts(size: int, patch: int, overlap: float, placement: str = "even") -> list[int]:
    """Start positions of windows of ``patch`` covering ``size`` with at least ``overlap``.

    ``even`` spreads the fewest windows evenly; ``stride`` steps by ``int(patch * (1 - overlap))`` and
    clamps the last window to the end, which is where MONAI's ``sliding_window_inference`` puts them (a model
    whose published recipe used MONAI then sees exactly the windows it was validated with).
    """
    if size <= patch:
        return [0]
    if placement == "stride":
        interval = max(1, int(patch * (1.0 - overlap)))
        n = next(d for d in range(size) if d * interval + patch >= size) + 1
        return [min(d * interval, size - patch) for d in range(n)]
    step = max(1.0, patch * (1.0 - overlap))
    n = math.ceil((size - patch) / step) + 1
    span = size - patch
    return [round(i * span / (n - 1)) for i in range(n)]


def _mirror_passes(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every flip combination of the given spatial axes (as dims of a (B, C, D, H, W) tensor), identity first."""
    dims = [a + 2 for a in mirror_axes]
    passes: list[tuple[int, ...]] = []
    for r in range(len(dims) + 1):
        passes.extend(itertools.combinations(dims, r))
    return passes


def _main_output(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Networks with deep supervision return several outputs; the first is the full-resolution one."""
    if isinstance(out, (tuple, list)):
        if not out:
            raise InputError("network", "returned an empty tuple")
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise InputError("network", f"returned {type(out).__name__}, expected a tensor")
    return out


class SlidingWindowInferer:
    """Patch-wise inference with blended overlaps, optional flip TTA and a memory guard.

    ``inferer(image, network)`` takes a (C, D, H, W) or (D, H, W) array or tensor and returns the blended
    network output as a float32 CPU tensor of shape (out_channels, D, H, W). The network is moved to the
    inferer's device and run in eval mode (its training flag is restored afterwards). The memory mode
    actually used is kept in ``last_plan``, the forward pass's dtype in ``last_precision``.

    ``precision`` (``auto``, ``float32``, ``bfloat16``, ``float16``; see ``select_precision``) sets the dtype
    the network computes in, through autocast; blending and the result stay float32. When ``auto`` chose a
    reduced precision and the network's first forward pass fails in it (an operation without a bfloat16 or
    float16 kernel), the run starts again in float32; an explicit choice is never overridden.
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        *,
        overlap: float = 0.5,
        placement: str = "even",
        batch_size: int = 2,
        blending: str = "gaussian",
        sigma_scale: float = 0.125,
        device: str | torch.device = "auto",
        precision: str = "auto",
        mirror_axes: Sequence[int] = (),
        channels_last: bool = False,
        keep_channels: Sequence[int] | None = None,
        pad_value: float = 0.0,
        activation_factor: float | None = None,
        memory_limit_bytes: int | None = None,
        device_memory_limit_bytes: int | None = None,
    ) -> None:
        patch = tuple(int(p) for p in patch_size)
        if len(patch) != 3 or min(patch) < 1:
            raise InputError("patch_size", f"needs three positive sizes, got {tuple(patch_size)}")
        if not 0.0 <= overlap < 1.0:
            raise InputError("overlap", f"must be in [0, 1), got {overlap}")
        if int(batch_size) < 1:
            raise InputError("batch_size", f"must be >= 1, got {batch_size}")
        if placement not in PLACEMENTS:
            raise InputError("placement", f"must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        axes = tuple(int(a) for a in mirror_axes)
        if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise InputError("mirror_axes", f"must be distinct spatial axes among 0, 1, 2, got {tuple(mirror_axes)}")
        if keep_channels is not None and (len(keep_channels) == 0 or min(keep_channels) < 0):
            raise InputError("keep_channels", f"must be non-negative channel indices, got {keep_channels}")
        self.patch_size = patch
        self.overlap = float(overlap)
        self.placement = placement
        self.batch_size = int(batch_size)
        self.profiles = axis_profiles(patch, blending, sigma_scale)  # validates blending and sigma
        self.sigma_scale = float(sigma_scale)
        self.blending = blending
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.precision = (precision or "auto").strip().lower()
        self.compute_dtype = select_precision(self.precision, self.device)  # validates ``precision``
        self.mirror_axes = axes
        # Measured on CPU (oneDNN, airway U-Net, 96^3 patches): channels-last 3-D is slower in float32 and no
        # faster in bfloat16, with ~15 % more activation memory, so it is opt-in.
        self.channels_last = bool(channels_last)
        self.keep_channels = None if keep_channels is None else [int(c) for c in keep_channels]
        self.pad_value = float(pad_value)
        self.activation_factor = activation_factor
        self.memory_limit_bytes = memory_limit_bytes
        self.device_memory_limit_bytes = device_memory_limit_bytes
        self.last_plan: MemoryPlan | None = None
        self.last_precision: torch.dtype | None = None
        self.last_num_windows = 0

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _as_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        elif isinstance(image, torch.Tensor):
            x = image.detach().to(torch.float32)
        else:
            raise InputError("image", f"expected a numpy array or torch tensor, got {type(image).__name__}")
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise InputError("image", f"expected (C, D, H, W) or (D, H, W), got shape {tuple(x.shape)}")
        if min(x.shape) < 1:
            raise InputError("image", f"is empty, shape {tuple(x.shape)}")
        for z in range(0, x.shape[1], _FINITE_CHECK_SLAB):
            if not bool(torch.isfinite(x[:, z : z + _FINITE_CHECK_SLAB]).all()):
                raise InputError("image", "contains NaN or infinite values")
        return x

    def _plan(self, shape: Sequence[int], out_channels: int, network: nn.Module, dtype: torch.dtype) -> MemoryPlan:
        factor = self.activation_factor if self.activation_factor is not None else guess_activation_factor(network)
        estimate = estimate_memory(
            shape,
            out_channels,
            self.patch_size,
            self.batch_size,
            param_count=count_parameters(network),
            activation_factor=factor,
            activation_bytes=torch.empty((), dtype=dtype).element_size(),
            device=self.device,
            memory_limit_bytes=self.memory_limit_bytes,
            device_memory_limit_bytes=self.device_memory_limit_bytes,
        )
        return plan_memory(estimate, self.device)

    def _weight_reciprocals(self, starts: list[list[int]], padded: Sequence[int]) -> list[torch.Tensor]:
        """1 / (sum of the blending weights of all windows) per axis, float64."""
        recips = []
        for profile, axis_starts, size, p in zip(self.profiles, starts, padded, self.patch_size):
            total = torch.zeros(size, dtype=torch.float64)
            for s in axis_starts:
                total[s : s + p] += profile
            recips.append(1.0 / total)
        return recips

    # ------------------------------------------------------------------ main entry
    def __call__(
        self,
        image: np.ndarray | torch.Tensor,
        network: nn.Module,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        *,
        out_channels: int | None = None,
    ) -> torch.Tensor:
        """Blend the network's output over the whole image; see the class docstring."""
        x = self._as_tensor(image)
        spatial = tuple(x.shape[1:])
        pad = [max(p - s, 0) for p, s in zip(self.patch_size, spatial)]
        before = [p // 2 for p in pad]
        if any(pad):
            # Small images are padded (centred) up to the patch and cropped back at the end.
            spec: list[int] = []
            for b, p in zip(reversed(before), reversed(pad)):
                spec += [b, p - b]
            x = F.pad(x[None], spec, value=self.pad_value)[0]
        padded = tuple(x.shape[1:])

        expected = out_channels or (len(self.keep_channels) if self.keep_channels else None)
        expected = expected or guess_out_channels(network) or 1
        dtype = self.compute_dtype
        plan = self._plan(x.shape, expected, network, dtype)
        self.last_plan = plan

        was_training = network.training
        network.eval()
        network.to(self.device)
        if self.channels_last:
            network.to(memory_format=torch.channels_last_3d)
        try:
            try:
                acc = self._run(x, padded, network, plan, expected, dtype, progress, cancel)
            except _LowPrecisionFailed:
                dtype = torch.float32
                plan = self._plan(x.shape, expected, network, dtype)
                self.last_plan = plan
                acc = self._run(x, padded, network, plan, expected, dtype, progress, cancel)
        finally:
            network.train(was_training)
        self.last_precision = dtype

        crop = tuple(slice(b, b + s) for b, s in zip(before, spatial))
        result = acc[(slice(None), *crop)]
        if any(pad):
            result = result.clone()
        return result.to("cpu")

    def _run(
        self,
        x: torch.Tensor,
        padded: tuple[int, ...],
        network: nn.Module,
        plan: MemoryPlan,
        expected_channels: int,
        dtype: torch.dtype,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> torch.Tensor:
        starts = [window_starts(s, p, self.overlap, self.placement) for s, p in zip(padded, self.patch_size)]
        windows = list(itertools.product(*starts))
        passes = _mirror_passes(self.mirror_axes)
        self.last_num_windows = len(windows)
        tracker = ProgressTracker("inference", len(windows) * len(passes), progress)

        compute = plan.compute_device
        # MONAI-compatible placement also takes MONAI's non-separable weight, normalised by a weight-sum volume.
        exact_monai = self.placement == "stride"
        if exact_monai:
            patch_weight = monai_importance(self.patch_size, self.blending, self.sigma_scale)
        else:
            gz, gy, gx = self.profiles
            patch_weight = (gz[:, None, None] * gy[None, :, None] * gx[None, None, :]).to(torch.float32)
        # Averaging the TTA passes is folded into the patch weight.
        weight = (patch_weight / len(passes)).to(compute)[None, None]
        weight_sum = torch.zeros(padded, dtype=torch.float32, device=plan.stitch_device) if exact_monai else None
        pz, py, px = self.patch_size
        x = x.to(plan.stitch_device)
        acc: torch.Tensor | None = None
        memory_format = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        low_precision = dtype != torch.float32
        # Only the first forward pass may fall back, and only under ``auto``: later failures are real errors.
        may_fall_back = low_precision and self.precision == "auto"

        def autocast() -> contextlib.AbstractContextManager:
            # No autocast object at all when off: older torch releases warn about autocast on some devices.
            return torch.autocast(device_type=compute.type, dtype=dtype) if low_precision else contextlib.nullcontext()

        i = 0
        while i < len(windows):
            batch = windows[i : i + plan.batch_size]
            patches = torch.stack([x[:, z : z + pz, y : y + py, w : w + px] for z, y, w in batch])
            patches = patches.to(compute, non_blocking=True).contiguous(memory_format=memory_format)
            pred: torch.Tensor | None = None
            with torch.inference_mode():
                for dims in passes:
                    if cancel is not None:
                        cancel.check("inference")
                    inp = torch.flip(patches, dims) if dims else patches
                    try:
                        with autocast():
                            out = _main_output(network(inp))
                    except RuntimeError as error:
                        if may_fall_back:
                            raise _LowPrecisionFailed from error
                        raise
                    may_fall_back = False
                    out = self._checked_output(out, inp)
                    if dims:
                        out = torch.flip(out, dims)
                    pred = out if pred is None else pred.add_(out)
                    tracker.step(len(batch))
                assert pred is not None
                pred.mul_(weight)
            if acc is None:
                plan = self._replan_if_needed(plan, pred.shape[1], expected_channels, x.shape, network, dtype)
                x = x.to(plan.stitch_device)
                # Allocated outside inference mode so the returned tensor is an ordinary one.
                acc = torch.zeros((pred.shape[1], *padded), dtype=torch.float32, device=plan.stitch_device)
            pred = pred.to(plan.stitch_device)
            with torch.inference_mode():
                for j, (z, y, w) in enumerate(batch):
                    acc[:, z : z + pz, y : y + py, w : w + px] += pred[j]
                    if weight_sum is not None:
                        weight_sum[z : z + pz, y : y + py, w : w + px] += patch_weight.to(weight_sum.device)
            i += len(batch)
        if cancel is not None:  # a cancel arriving during the last batch must not return a result
            cancel.check("inference")
        assert acc is not None
        if weight_sum is not None:
            acc.div_(weight_sum[None])
            return acc

        rz, ry, rx = (r.to(torch.float32).to(acc.device) for r in self._weight_reciprocals(starts, padded))
        acc.mul_((ry[:, None] * rx[None, :])[None, None])
        acc.mul_(rz[None, :, None, None])
        return acc

    def _checked_output(self, out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        """Float32 copy-safe output, restricted to the kept channels, with the patch's spatial shape."""
        if out.ndim != 5 or out.shape[0] != inp.shape[0] or tuple(out.shape[2:]) != self.patch_size:
            raise InputError(
                "network",
                f"output shape {tuple(out.shape)} does not match a batch of {inp.shape[0]} patches of "
                f"{self.patch_size}; only size-preserving networks are supported",
            )
        if self.keep_channels is not None:
            if max(self.keep_channels) >= out.shape[1]:
                raise InputError("keep_channels", f"{self.keep_channels} out of range for {out.shape[1]} channels")
            return out[:, self.keep_channels].float()
        if out.dtype != torch.float32:
            return out.float()
        if out.untyped_storage().data_ptr() == inp.untyped_storage().data_ptr():
            return out.clone()  # later in-place updates must not touch the input patches
        return out

    def _replan_if_needed(
        self,
        plan: MemoryPlan,
        channels: int,
        expected: int,
        shape: Sequence[int],
        network: nn.Module,
        dtype: torch.dtype,
    ) -> MemoryPlan:
        """The output width is only known after the first batch; plan again if it exceeds the guess."""
        if channels <= expected:
            return plan
        new_plan = self._plan(shape, channels, network, dtype)
        if new_plan.batch_size > plan.batch_size:  # never grow the batch mid-run
            new_plan = MemoryPlan(
                new_plan.mode,
                plan.batch_size,
                new_plan.compute_device,
                new_plan.stitch_device,
                new_plan.estimate,
                new_plan.bytes_device,
                new_plan.bytes_host,
            )
        self.last_plan = new_plan
        return new_plan
