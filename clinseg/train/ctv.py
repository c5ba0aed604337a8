"""``clinseg train ctv``: document 002's CTV network (residual + SE 3-D U-Net, recurrent refinement, BCE + Dice)
trained on head & neck phantoms with a primary tumour, CT only in, the phantom's CTV out.

Cases: procedural phantoms (``generate_headneck``, seeds ``train_seeds``, built at the 1 x 1 x 2.5 mm grid a user's
CT has, tumour in the oropharynx or on the mandible by seed parity) and, when the real masks are at hand, phantoms
around the oncologist masks of the ``hn_oar_masks`` test split. Every case is resampled to ``spacing`` (CT linear,
CTV as a fraction > 0.5) and cached as int16 HU + uint8 mask. Held-out cases (``heldout_phantoms``) are other
seeds and the validation split: disjoint from training by construction.

Each step draws ``batch`` cuboids: with probability ``fg_fraction`` one holding a random CTV voxel, else one
anywhere in the case; flips, small rotations and intensity changes (``augment_batch``); loss = BCE + soft Dice
averaged over the recurrent passes (``ctv_loss``). The steps run on the shared loop (``clinseg.train.loop``) as
epochs of ``steps_per_epoch`` steps: Adam, learning rate /10 at 80 % of the steps or of ``max_minutes``, whichever
comes first, a checkpoint every epoch (``resume``). The run folder gets ``model.safetensors``, ``log.csv`` (one
row per epoch), ``summary.json``, ``run.json`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..nets.counting import count_parameters
from ..nets.ctv_unet import CTVUNet
from ..preprocess import resample, window
from ..volume import Volume
from .augment import AugmentConfig, augment_batch
from .loop import LoopConfig, check_resumed_settings, train
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
    steps_per_epoch: int = 25  # one log row and one checkpoint per epoch
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
    if config.steps_per_epoch < 1:
        raise InputError("--steps-per-epoch", "must be at least 1")
    if config.batch < 1:
        raise InputError("--batch", "must be at least 1")
    if config.patch[0] % 8 or config.patch[1] % 32 or config.patch[2] % 32:
        raise InputError("--patch", f"D must be a multiple of 8 and H, W of 32, got {config.patch}")
    if not 0.0 <= config.fg_fraction <= 1.0:
        raise InputError("--fg-fraction", "must lie in [0, 1]")


class CtvTask:
    """``TrainTask`` of the CTV network: epochs of ``steps_per_epoch`` steps (the last one what is left of
    ``steps``), the loss on every recurrent pass."""

    def __init__(self, cases: list[tuple[str, np.ndarray, np.ndarray]], config: CtvTrainConfig) -> None:
        self.cases, self.config = cases, config

    def batches(self, epoch: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch])  # from (seed, epoch): a resumed run repeats this epoch
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        for _ in range(min(cfg.steps_per_epoch, cfg.steps - epoch * cfg.steps_per_epoch)):
            x, y = draw_batch(self.cases, cfg, rng)
            if cfg.augment:
                x, y = augment_batch(x, y, generator, AugmentConfig())
            yield x.to(device), y.to(device)

    def forward(self, model: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(model(image, return_all=True))

    def loss(self, output: tuple[torch.Tensor, ...], label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return ctv_loss(output, label), output[-1]

    def validate(self, model: nn.Module, epoch: int, device: torch.device) -> None:
        return None  # held-out figures come from bench/ctv.py

    def metadata(self) -> dict[str, str]:
        return {"config": json.dumps(asdict(self.config))}


def _run_settings(out: Path, config: CtvTrainConfig, resume: bool) -> None:
    """``run.json``: a resumed run must keep every setting but ``steps`` and ``max_minutes``."""
    path = out / "run.json"
    settings = {k: v for k, v in json.loads(json.dumps(asdict(config))).items() if k not in ("steps", "max_minutes")}
    if resume:
        check_resumed_settings(path, settings)
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def train_ctv(out: str | Path, config: CtvTrainConfig, masks_root: Path | None = None, cache: Path | None = None,
              log: Callable[[str], None] = print, device: torch.device | None = None, amp: bool = True,
              resume: bool = False) -> dict:
    """Train on the shared loop, write the run folder, return the summary."""
    _check(config)
    out = Path(out)
    _run_settings(out, config, resume)
    started = time.perf_counter()
    cases = training_cases(config, masks_root, cache or out / "cache", log)
    prepared_s = time.perf_counter() - started
    log(f"{len(cases)} training cases in {prepared_s:.0f} s")
    torch.manual_seed(config.seed)  # network initialisation
    net = CTVUNet(**network_kwargs(config))
    loop = LoopConfig(out, math.ceil(config.steps / config.steps_per_epoch), lr=config.lr, milestones=(0.8,),
                      seed=config.seed, device=device or torch.device("cpu"), amp=amp,
                      max_minutes=config.max_minutes, resume=resume, time_milestones=True, log=log)
    result = train(net, CtvTask(cases, config), loop)
    steps = sum(int(row["iterations"]) for row in result.rows)
    train_s = sum(float(row["seconds"]) for row in result.rows)
    summary = {"config": asdict(config), "steps": steps, "epochs": result.epochs_done,
               "stopped_early": result.stopped_early, "cases": [name for name, _, _ in cases],
               "prepare_seconds": round(prepared_s, 1), "train_seconds": round(train_s, 1),
               "seconds_per_step": round(train_s / max(steps, 1), 3), "threads": torch.get_num_threads(),
               "parameters": count_parameters(net).full,
               "final_loss": float(result.rows[-1]["train_loss"]) if result.rows else None,
               "final_lr": float(result.rows[-1]["lr"]) if result.rows else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
