"""``clinseg train ctv``: document 002's CTV network (residual + SE 3-D U-Net, recurrent refinement, BCE + Dice)
trained on head & neck phantoms with a primary tumour, CT only in, the phantom's CTV out.

Cases: procedural phantoms (``generate_headneck``, seeds ``train_seeds``, built at the 1 x 1 x 2.5 mm grid a user's
CT has, tumour in the oropharynx or on the mandible by seed parity) and, when the real masks are at hand, phantoms
around the oncologist masks of the ``hn_oar_masks`` test split. Every case is resampled to ``spacing`` (CT linear,
CTV as a fraction > 0.5) and cached as int16 HU + uint8 mask. Held-out cases (``heldout_phantoms``) are other
seeds and the validation split: disjoint from training by construction.

Each step draws ``batch`` cuboids: with probability ``fg_fraction`` one holding a random CTV voxel, else one
anywhere in the case; flips, small rotations and intensity changes (``augment_batch``); loss = BCE + soft Dice
averaged over the recurrent passes (``ctv_loss``). Adam, learning rate /10 after 80 % of the steps (or of
``max_minutes``). The run folder gets ``model.safetensors`` (also every 100 steps), ``log.csv`` and
``summary.json``.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..nets.counting import count_parameters
from ..nets.ctv_unet import CTVUNet
from ..preprocess import resample, window
from ..volume import Volume
from .augment import AugmentConfig, augment_batch
from .loop import export_safetensors
from .oar_losses import ctv_loss
from .sampler import foreground_start, read_patch

AIR_HU = -1000.0
# Soft-tissue window: the phantom tumour differs from muscle by tens of HU, a few per cent of the thesis's
# 1600 HU range; air still maps to 0 and bone to 1, which is what bounds a CTV.
HU_WINDOW = (-160.0, 240.0)
TRAIN_SEEDS = tuple(range(100, 132))
HELDOUT_SEEDS = tuple(range(500, 508))
MASK_SEED, HELDOUT_MASK_SEED = 2000, 3000
SITES = ("oropharynx", "mandible")


@dataclass
class CtvTrainConfig:
    widths: tuple[int, ...] = (8, 16, 24, 32, 48)
    n_iterations: int = 2
    spacing: tuple[float, float, float] = (2.0, 2.0, 3.0)  # i, j, k mm
    patch: tuple[int, int, int] = (24, 64, 64)  # D, H, W: multiples of (8, 32, 32)
    batch: int = 2
    lr: float = 1e-3
    steps: int = 800
    fg_fraction: float = 2 / 3
    margin_mm: float = 8.0  # the phantoms' CTV margin
    train_seeds: tuple[int, ...] = TRAIN_SEEDS
    mask_split: str | None = "test"  # hn_oar_masks split used for training (None: procedural phantoms only)
    seed: int = 0
    max_minutes: float | None = None
    augment: bool = True
    window: tuple[float, float] = HU_WINDOW
    extra: dict = field(default_factory=dict)


def network_kwargs(config: CtvTrainConfig) -> dict:
    return {"in_channels": 1, "widths": list(config.widths), "z_poolings": 3, "residual": True, "se": True,
            "recurrent": True, "n_iterations": config.n_iterations}


def site_of(seed: int) -> str:
    return SITES[seed % 2]


def on_grid(ct: Volume, ctv: Volume, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(int16 HU, uint8 CTV) resampled to ``spacing``."""
    hu = resample(ct, spacing, order=1, default_value=AIR_HU).array
    frac = resample(ctv.with_array(ctv.array.astype(np.float32)), spacing, order=1).array
    return np.round(hu).astype(np.int16), (frac > 0.5).astype(np.uint8)


def _mask_phantom(masks: dict, seed: int, margin_mm: float):
    from ..phantoms.headneck import generate_headneck_from_masks

    first = site_of(seed)
    for site in (first, *[s for s in SITES if s != first]):
        try:
            return generate_headneck_from_masks(masks, seed, with_tumour=True, margin_mm=margin_mm, tumour_site=site)
        except InputError:  # this field of view has no airway (or no mandible) for that site
            continue
    return None


def phantom_specs(seeds: tuple[int, ...], masks_root: Path | None, split: str | None, mask_seed: int,
                  margin_mm: float = 8.0) -> list[tuple[str, Callable[[], object]]]:
    """(name, builder of a HeadNeckPhantom with GTV and CTV, or None): procedural ``seeds``, then the ``split``
    of the real masks. Nothing is built until a builder is called."""
    from ..phantoms.headneck import generate_headneck

    specs: list[tuple[str, Callable[[], object]]] = [
        (f"phantom{seed}", lambda seed=seed: generate_headneck(seed, margin_mm=margin_mm, tumour_site=site_of(seed)))
        for seed in seeds]
    if masks_root is None or split is None:
        return specs
    from ..datasets.hn_oar import crop_to_organs, read_hn_oar

    for index, case in enumerate(read_hn_oar(masks_root, (split,))):
        seed = mask_seed + index
        specs.append((f"{case.name}_{seed}", lambda case=case, seed=seed: _mask_phantom(
            crop_to_organs(case.load("oncologist"), 30.0), seed, margin_mm)))
    return specs


def heldout_phantoms(masks_root: Path | None, procedural: bool = True) -> Iterator[tuple[str, object]]:
    """The held-out set of ``bench/ctv.py`` and the card: other seeds and the masks' validation split."""
    seeds = HELDOUT_SEEDS if procedural else ()
    for name, build in phantom_specs(seeds, masks_root, "validation", HELDOUT_MASK_SEED):
        ph = build()
        if ph is not None:
            yield name, ph


def training_cases(config: CtvTrainConfig, masks_root: Path | None, cache: Path,
                   log: Callable[[str], None] = print) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Training cases on the working grid, each built once and cached in ``cache`` as ``<name>__<grid>.npz``."""
    cache.mkdir(parents=True, exist_ok=True)
    tag = "_".join(f"{s:g}" for s in config.spacing) + f"_m{config.margin_mm:g}"
    out = []
    for name, build in phantom_specs(config.train_seeds, masks_root, config.mask_split, MASK_SEED,
                                     config.margin_mm):
        path = cache / f"{name}__{tag}.npz"
        if not path.is_file():
            ph = build()
            if ph is None:
                continue
            hu, ctv = on_grid(ph.ct, ph.ctv, config.spacing)
            np.savez_compressed(path, hu=hu, ctv=ctv)
            log(f"prepared {name}: {hu.shape}, CTV {int(ctv.sum())} voxels")
        data = np.load(path)
        out.append((name, data["hu"], data["ctv"]))
    if not out:
        raise InputError("--data", "no training cases")
    return out


def draw_batch(cases, config: CtvTrainConfig, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for _ in range(config.batch):
        _, hu, ctv = cases[int(rng.integers(len(cases)))]
        if rng.random() < config.fg_fraction and ctv.any():
            points = np.argwhere(ctv)
            start = foreground_start(rng, points[int(rng.integers(len(points)))], hu.shape, config.patch)
        else:
            start = tuple(int(rng.integers(0, max(n - p, 0) + 1)) for n, p in zip(hu.shape, config.patch))
        images.append(window(read_patch(hu, start, config.patch, fill=AIR_HU), *config.window))
        labels.append(read_patch(ctv, start, config.patch).astype(np.float32))
    return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(labels))[:, None]


def _check(config: CtvTrainConfig) -> None:
    if config.steps < 1:
        raise InputError("--steps", "must be at least 1")
    if config.batch < 1:
        raise InputError("--batch", "must be at least 1")
    if config.patch[0] % 8 or config.patch[1] % 32 or config.patch[2] % 32:
        raise InputError("--patch", f"D must be a multiple of 8 and H, W of 32, got {config.patch}")
    if not 0.0 <= config.fg_fraction <= 1.0:
        raise InputError("--fg-fraction", "must lie in [0, 1]")


def train_ctv(out: str | Path, config: CtvTrainConfig, masks_root: Path | None = None, cache: Path | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Train, write the run folder, return the summary."""
    _check(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cases = training_cases(config, masks_root, cache or out / "cache", log)
    prepared_s = time.perf_counter() - started
    log(f"{len(cases)} training cases in {prepared_s:.0f} s")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net = CTVUNet(**network_kwargs(config))
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    weights = out / "model.safetensors"
    meta = {"config": json.dumps(asdict(config))}
    rows, window_loss = [], []
    train_started = time.perf_counter()
    dropped = False
    step = 0
    net.train()
    for step in range(1, config.steps + 1):
        minutes = (time.perf_counter() - train_started) / 60
        if config.max_minutes is not None and minutes >= config.max_minutes:
            step -= 1
            break
        late = step > 0.8 * config.steps or (config.max_minutes is not None and minutes > 0.8 * config.max_minutes)
        if late and not dropped:
            for group in optimiser.param_groups:
                group["lr"] = config.lr / 10
            dropped = True
        x, y = draw_batch(cases, config, rng)
        if config.augment:
            x, y = augment_batch(x, y, generator, AugmentConfig())
        loss = ctv_loss(net(x, return_all=True), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        window_loss.append(loss.item())
        if step % 25 == 0 or step == config.steps:
            elapsed = time.perf_counter() - train_started
            rows.append({"step": step, "loss": round(float(np.mean(window_loss)), 4), "seconds": round(elapsed, 1),
                         "lr": optimiser.param_groups[0]["lr"]})
            window_loss = []
            log(f"step {step}: loss {rows[-1]['loss']}, {elapsed / step:.2f} s/step")
        if step % 100 == 0:
            export_safetensors(net, weights, meta)
    train_s = time.perf_counter() - train_started
    export_safetensors(net, weights, meta)
    with open(out / "log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "loss", "seconds", "lr"])
        writer.writeheader()
        writer.writerows(rows)
    summary = {"config": asdict(config), "steps": step, "cases": [name for name, _, _ in cases],
               "prepare_seconds": round(prepared_s, 1), "train_seconds": round(train_s, 1),
               "seconds_per_step": round(train_s / max(step, 1), 3), "threads": torch.get_num_threads(),
               "parameters": count_parameters(net).full, "final_loss": rows[-1]["loss"] if rows else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
