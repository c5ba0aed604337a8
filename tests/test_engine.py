"""Sliding-window engine: stitching equals a whole-volume pass, blending, padding, TTA, progress, cancel,
memory guard and device selection (small CPU volumes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from clinseg.engine import (
    MemoryEstimate,
    SlidingWindowInferer,
    devices,
    estimate_memory,
    gaussian_importance,
    plan_memory,
    select_device,
    select_precision,
    window_starts,
)
from clinseg.errors import Cancelled, InputError, ResourceError
from clinseg.progress import CancelToken

# Float32 on the CPU: ``auto`` would pick bfloat16 on CPUs with native support, and these tests check
# stitching to float32 rounding.
EXACT = {"device": "cpu", "precision": "float32"}


def local_net(seed: int = 0, out_channels: int = 2) -> nn.Module:
    """Three 3x3x3 convs with zero padding: translation-equivariant, receptive-field halo of 3 voxels."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv3d(4, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv3d(4, out_channels, 3, padding=1),
    )


def pointwise_net(seed: int = 0, in_channels: int = 1, out_channels: int = 3) -> nn.Module:
    """A nonlinear per-voxel net: every window predicts the same value at a voxel, whatever its position."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(in_channels, 5, 1), nn.Tanh(), nn.Conv3d(5, out_channels, 1))


class CallCounter(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def whole(network: nn.Module, image: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return network(torch.from_numpy(image)[None, None])[0]


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(48, 48, 48)).astype(np.float32)


def test_window_starts_cover_and_overlap() -> None:
    assert window_starts(48, 32, 0.5) == [0, 16]
    assert window_starts(32, 32, 0.5) == [0]
    assert window_starts(20, 32, 0.5) == [0]
    starts = window_starts(173, 40, 0.25)
    assert len(starts) == 6 and starts[0] == 0 and starts[-1] == 133  # 133 / 30 -> 5 steps
    gaps = np.diff(starts)
    assert set(gaps.tolist()) == {26, 27}  # evenly spread, every step <= patch * (1 - overlap)


def test_constant_blending_equals_whole_volume_where_all_windows_are_valid(volume: np.ndarray) -> None:
    net = local_net()
    inferer = SlidingWindowInferer((32, 32, 32), overlap=0.5, batch_size=3, blending="constant", **EXACT)
    out = inferer(volume, net)
    ref = whole(net, volume)
    assert out.shape == ref.shape == (2, 48, 48, 48) and out.dtype == torch.float32
    # Windows start at 0 and 16. A voxel is exact when every window covering it sees its full 3-voxel
    # halo (or the volume border, zero-padded in both computations): [0,16), [19,29) and [32,48) per axis.
    valid = np.zeros(48, bool)
    valid[0:16] = valid[19:29] = valid[32:48] = True
    mask = torch.from_numpy(valid[:, None, None] & valid[None, :, None] & valid[None, None, :])
    err = (out - ref).abs()
    assert err[:, mask].max() < 1e-5
    assert err.max() > 1e-3  # elsewhere windows' cut borders do show: the comparison above is not vacuous


def test_gaussian_blending_of_pointwise_net_is_exact_everywhere(volume: np.ndarray) -> None:
    net = pointwise_net()
    image = volume[:, :45, :37]  # uneven grids on two axes
    out = SlidingWindowInferer((32, 20, 24), overlap=0.25, blending="gaussian", **EXACT)(image, net)
    assert out.shape == (3, 48, 45, 37)
    torch.testing.assert_close(out, whole(net, np.ascontiguousarray(image)), atol=2e-6, rtol=1e-5)


def test_gaussian_importance_shape_range_and_symmetry() -> None:
    w = gaussian_importance((32, 20, 24))
    assert w.shape == (32, 20, 24) and w.dtype == torch.float32
    assert float(w.max()) == pytest.approx(1.0) and float(w.min()) > 0
    assert float(w[0, 0, 0]) < 1e-8  # corners weigh ~exp(-24) of the centre with sigma = patch / 8
    torch.testing.assert_close(w, torch.flip(w, (0, 1, 2)))
    # separable: the weight is the outer product of its central lines
    line = w[:, 10, 12][:, None] * w[16, :, 12][None, :] / w[16, 10, 12]
    torch.testing.assert_close(w[:, :, 12], line, rtol=1e-5, atol=1e-12)
    flat = gaussian_importance((8, 8, 8), sigma_scale=0.001)
    assert float(flat.min()) > 0  # a tiny sigma still never gives a zero weight


def test_weights_sum_to_one_identity_network_returns_input() -> None:
    image = np.random.default_rng(2).normal(size=(2, 40, 45, 37)).astype(np.float32)
    for blending in ("gaussian", "constant"):
        out = SlidingWindowInferer((16, 20, 24), overlap=0.5, blending=blending, **EXACT)(image, nn.Identity())
        torch.testing.assert_close(out, torch.from_numpy(image), atol=1e-5, rtol=1e-5)


def test_small_image_is_padded_and_cropped_back() -> None:
    image = np.random.default_rng(3).normal(size=(10, 20, 40)).astype(np.float32)
    net = pointwise_net()
    out = SlidingWindowInferer((32, 32, 32), overlap=0.5, **EXACT)(image, net)
    assert out.shape == (3, 10, 20, 40) and out.is_contiguous()
    torch.testing.assert_close(out, whole(net, image), atol=2e-6, rtol=1e-5)


def test_flip_tta_averages_all_mirror_combinations() -> None:
    image = np.random.default_rng(4).normal(size=(16, 16, 16)).astype(np.float32)
    net = CallCounter(local_net(seed=5))
    out = SlidingWindowInferer((16, 16, 16), mirror_axes=(0, 1, 2), **EXACT)(image, net)
    assert net.calls == 8
    x = torch.from_numpy(image)[None, None]
    with torch.no_grad():
        flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
        ref = sum(torch.flip(net.inner(torch.flip(x, d)), d) for d in flips) / 8
    torch.testing.assert_close(out, ref[0], atol=1e-5, rtol=1e-5)
    assert (out - whole(net.inner, image)).abs().max() > 1e-3  # the asymmetric net does change under TTA


def test_flip_tta_with_a_symmetric_net_changes_nothing(volume: np.ndarray) -> None:
    conv = nn.Conv3d(1, 1, 3, padding=1)
    with torch.no_grad():
        k = torch.rand(1, 1, 3, 3, 3)
        flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
        conv.weight.copy_(sum(k.flip(d) if d else k for d in flips) / 8)  # mirror-symmetric on every axis
    net = nn.Sequential(conv, nn.Tanh())
    plain = SlidingWindowInferer((32, 32, 32), overlap=0.5, **EXACT)(volume, net)
    tta = SlidingWindowInferer((32, 32, 32), overlap=0.5, mirror_axes=(0, 2), **EXACT)(volume, net)
    torch.testing.assert_close(tta, plain, atol=1e-5, rtol=1e-5)


def test_progress_is_monotonic_and_counts_tta_passes(volume: np.ndarray) -> None:
    events = []
    inferer = SlidingWindowInferer((32, 32, 32), overlap=0.5, batch_size=3, mirror_axes=(1,), **EXACT)
    inferer(volume, local_net(), progress=events.append)
    assert inferer.last_num_windows == 8
    done = [e.done for e in events]
    assert all(e.stage == "inference" and e.total == 16 for e in events)
    assert done == sorted(done) and done[-1] == 16 and len(events) == 6  # 3 batches x 2 passes


@pytest.mark.parametrize("batch_size, expected_calls", [(1, 2), (3, 1)])
def test_cancel_from_progress_callback_stops_within_one_batch(
    volume: np.ndarray, batch_size: int, expected_calls: int
) -> None:
    token = CancelToken()
    net = CallCounter(local_net())

    def on_progress(event) -> None:
        if event.done >= 2:
            token.cancel()

    inferer = SlidingWindowInferer((32, 32, 32), overlap=0.5, batch_size=batch_size, **EXACT)
    with pytest.raises(Cancelled):
        inferer(volume, net, progress=on_progress, cancel=token)
    assert net.calls == expected_calls


def test_memory_guard_switches_to_batch1_then_refuses(volume: np.ndarray) -> None:
    net = local_net()
    kwargs = dict(overlap=0.5, batch_size=4, **EXACT, activation_factor=64)
    est = estimate_memory(
        (1, 48, 48, 48),
        2,
        (32, 32, 32),
        4,
        param_count=sum(p.numel() for p in net.parameters()),
        activation_factor=64,
        memory_limit_bytes=10**12,
    )
    assert est.bytes_output_buffers == 2 * 48**3 * 4 and est.bytes_input == 48**3 * 4
    fixed = est.bytes_input + est.bytes_output_buffers
    between = fixed + (est.activations_for(1) + est.activations_for(4)) // 2

    roomy = SlidingWindowInferer((32, 32, 32), memory_limit_bytes=10**12, **kwargs)
    reference = roomy(volume, net)
    assert roomy.last_plan.mode == "full" and roomy.last_plan.batch_size == 4

    tight = SlidingWindowInferer((32, 32, 32), memory_limit_bytes=between, **kwargs)
    out = tight(volume, net)
    assert tight.last_plan.mode == "batch1" and tight.last_plan.batch_size == 1
    torch.testing.assert_close(out, reference)

    tiny = SlidingWindowInferer((32, 32, 32), memory_limit_bytes=fixed // 2, **kwargs)
    with pytest.raises(ResourceError, match=r"needs about 0\.\d\d GB of RAM .* limit is 0\.\d\d GB"):
        tiny(volume, net)


def test_memory_plan_keeps_stitching_on_host_when_the_accelerator_is_small() -> None:
    gb = 10**9
    est = MemoryEstimate(
        bytes_output_buffers=6 * gb,
        bytes_patch_activations=3 * gb,
        device_limit=5 * gb,
        host_limit=32 * gb,
        bytes_input=2 * gb,
        bytes_params=gb // 10,
        bytes_per_patch=gb,
        batch_size=2,
    )
    plan = plan_memory(est, "cuda:0")
    assert (plan.mode, plan.batch_size, plan.stitch_device.type) == ("host-stitching", 2, "cpu")
    assert plan.bytes_host == 8 * gb
    small_gpu = MemoryEstimate(6 * gb, 3 * gb, gb // 2, 32 * gb, 2 * gb, gb // 10, gb, 2)
    with pytest.raises(ResourceError, match=r"1\.10 GB of CUDA memory .* limit is 0\.50 GB"):
        plan_memory(small_gpu, "cuda:0")
    small_host = MemoryEstimate(6 * gb, 3 * gb, 5 * gb, 4 * gb, 2 * gb, gb // 10, gb, 2)
    with pytest.raises(ResourceError, match=r"8\.00 GB of RAM .* limit is 4\.00 GB"):
        plan_memory(small_host, "cuda:0")


def test_tuple_output_keep_channels_and_4d_input() -> None:
    image = np.random.default_rng(6).normal(size=(2, 20, 24, 28)).astype(np.float32)
    head = pointwise_net(in_channels=2, out_channels=4)

    class DeepSupervision(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            main = head(x)
            return main, main[:, :, ::2, ::2, ::2]

    out = SlidingWindowInferer((16, 16, 16), keep_channels=[3, 1], **EXACT)(torch.from_numpy(image), DeepSupervision())
    ref = head(torch.from_numpy(image)[None])[0].detach()
    assert out.shape == (2, 20, 24, 28)
    torch.testing.assert_close(out, ref[[3, 1]], atol=2e-6, rtol=1e-5)


def test_result_is_an_ordinary_tensor_and_training_flag_is_restored(volume: np.ndarray) -> None:
    net = local_net().train()
    out = SlidingWindowInferer((32, 32, 32), **EXACT)(volume, net)
    assert net.training and not out.is_inference() and not out.requires_grad
    out.add_(1.0)  # downstream code may work in place


def test_bad_inputs_raise_input_error(volume: np.ndarray) -> None:
    inferer = SlidingWindowInferer((16, 16, 16), **EXACT)
    with pytest.raises(InputError, match="image"):
        inferer(np.zeros((16, 16), np.float32), nn.Identity())
    bad = np.zeros((16, 16, 16), np.float32)
    bad[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        inferer(bad, nn.Identity())
    with pytest.raises(InputError, match="network"):
        inferer(volume, nn.MaxPool3d(2))
    with pytest.raises(InputError, match="overlap"):
        SlidingWindowInferer((16, 16, 16), overlap=1.0)
    with pytest.raises(InputError, match="blending"):
        SlidingWindowInferer((16, 16, 16), blending="median")
    with pytest.raises(InputError, match="mirror_axes"):
        SlidingWindowInferer((16, 16, 16), mirror_axes=(3,))


def test_select_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")
    with pytest.raises(InputError, match="unknown device"):
        select_device("banana")
    with pytest.raises(InputError, match="unsupported device"):
        select_device("xpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="CUDA is not available"):
        select_device("cuda:1")
    with pytest.raises(InputError, match="MPS is not available"):
        select_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert select_device("auto") == torch.device("cuda", 0)
    with pytest.raises(InputError, match="only 1 CUDA device"):
        select_device("cuda:1")


def test_constant_blending_matches_monai_on_the_same_grid() -> None:
    monai_inferers = pytest.importorskip("monai.inferers")
    image = torch.from_numpy(np.random.default_rng(7).normal(size=(1, 40, 40, 40)).astype(np.float32))
    net = local_net(seed=8)
    ours = SlidingWindowInferer((24, 24, 24), overlap=0.25, blending="constant", **EXACT)(image, net)
    with torch.no_grad():  # MONAI's int(24 * 0.75) = 18 step gives windows at 0 and 16, as ours does
        theirs = monai_inferers.sliding_window_inference(
            image[None], (24, 24, 24), 1, net, overlap=0.25, mode="constant"
        )
    torch.testing.assert_close(ours, theirs[0], atol=1e-6, rtol=1e-5)


def test_precision_option_is_honoured_and_bfloat16_stays_close_to_float32(volume: np.ndarray) -> None:
    net = local_net()
    full = SlidingWindowInferer((32, 32, 32), device="cpu", precision="float32")
    plain = full(volume, net)
    assert full.last_precision == torch.float32
    torch.testing.assert_close(plain, full(volume, net))  # float32 is deterministic run to run
    low_inferer = SlidingWindowInferer((32, 32, 32), device="cpu", precision=" BFloat16 ")
    low = low_inferer(volume, net)
    assert low_inferer.last_precision == torch.bfloat16 and low.dtype == torch.float32
    # activations are planned at 2 bytes instead of 4
    assert low_inferer.last_plan.estimate.bytes_per_patch < full.last_plan.estimate.bytes_per_patch
    err = (low - plain).abs()
    assert 0 < float(err.max()) < 0.05  # bfloat16 keeps ~3 significant digits
    with pytest.raises(InputError, match="precision"):
        SlidingWindowInferer((32, 32, 32), device="cpu", precision="int8")


def test_bfloat16_unet_probabilities_stay_close_to_float32() -> None:
    airway_unet = pytest.importorskip("clinseg.nets.airway_unet")
    torch.manual_seed(0)
    net = airway_unet.AirwayUNet(width=0.25)  # conv, instance norm, pooling, upsampling, concatenation
    image = np.random.default_rng(0).random((40, 48, 48)).astype(np.float32)
    runs = {
        p: SlidingWindowInferer((32, 32, 32), device="cpu", precision=p)(image, net) for p in ("float32", "bfloat16")
    }
    diff = (torch.sigmoid(runs["bfloat16"]) - torch.sigmoid(runs["float32"])).abs()
    assert float(diff.max()) < 0.1 and float(diff.mean()) < 0.01  # measured 0.061 / 0.0055 (random weights)


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_precision_uses_bfloat16_only_on_cpus_with_native_support(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: torch.dtype
) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    assert select_precision("auto", torch.device("cpu")) == expected
    assert SlidingWindowInferer((8, 8, 8), device="cpu").compute_dtype == expected
    assert select_precision("float32", torch.device("cpu")) == torch.float32
    assert select_precision("auto", torch.device("mps")) == torch.float32
    assert select_precision("auto", torch.device("cuda", 0)) == torch.float16


class NoLowPrecisionKernel(nn.Module):
    """Stands for a network with an operation that has no bfloat16 kernel: it fails under autocast."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError("\"special_op\" not implemented for 'BFloat16'")
        return self.inner(x)


def test_auto_precision_falls_back_to_float32_but_an_explicit_choice_does_not(
    monkeypatch: pytest.MonkeyPatch, volume: np.ndarray
) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    net = NoLowPrecisionKernel(local_net())
    events = []
    auto = SlidingWindowInferer((32, 32, 32), overlap=0.5, batch_size=4, device="cpu")
    assert auto.compute_dtype == torch.bfloat16
    out = auto(volume, net, progress=events.append)
    assert auto.last_precision == torch.float32 and net.calls == 1 + 2  # one failed pass, then 2 batches of 4
    torch.testing.assert_close(out, SlidingWindowInferer((32, 32, 32), device="cpu", precision="float32")(volume, net))
    assert [e.done for e in events] == [4, 8]  # the failed pass reported no progress
    with pytest.raises(RuntimeError, match="BFloat16"):
        SlidingWindowInferer((32, 32, 32), device="cpu", precision="bfloat16")(volume, net)


def test_cancel_during_the_last_batch_still_raises(volume: np.ndarray) -> None:
    token = CancelToken()
    net = CallCounter(local_net())

    def on_progress(event) -> None:
        if event.done == event.total:
            token.cancel()

    inferer = SlidingWindowInferer((32, 32, 32), overlap=0.5, batch_size=3, device="cpu")
    with pytest.raises(Cancelled):
        inferer(volume, net, progress=on_progress, cancel=token)
    assert net.calls == 3  # every batch ran; the result is still withheld


@pytest.mark.parametrize("size", [100, 128, 160, 200, 256, 300, 517])
def test_stride_placement_puts_windows_where_monai_does(size):
    monai_utils = pytest.importorskip("monai.data.utils")
    interval = int(128 * (1 - 0.25))
    slices = monai_utils.dense_patch_slices((max(size, 128),) * 1, (128,), (interval,))
    assert window_starts(max(size, 128), 128, 0.25, "stride") == sorted({s[0].start for s in slices})
    assert window_starts(size, 128, 0.25, "even")[-1] == max(size - 128, 0)


def test_stride_placement_reproduces_monai_gaussian_blending_exactly():
    inferers = pytest.importorskip("monai.inferers")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 2, 3, padding=1))
    net.eval()
    image = torch.rand(1, 1, 40, 50, 61)
    with torch.no_grad():
        reference = inferers.sliding_window_inference(
            image, (32, 32, 32), 1, net, overlap=0.25, mode="gaussian", sigma_scale=0.125)[0]
    ours = SlidingWindowInferer((32, 32, 32), overlap=0.25, placement="stride", batch_size=3, precision="float32",
                                device="cpu")(image[0], net)
    assert torch.allclose(ours, reference, atol=1e-5)
    even = SlidingWindowInferer((32, 32, 32), overlap=0.25, batch_size=3, precision="float32", device="cpu")
    even = even(image[0], net)
    assert not torch.allclose(even, reference, atol=1e-5)  # the default placement is a different (valid) blend
