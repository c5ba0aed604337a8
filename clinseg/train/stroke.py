"""Training of the document-003 stroke networks (D-UNet, AGMR-Net, TSRL-Net) on 2.5-D slice stacks.

Data: any folder ``clinseg.datasets.stroke`` reads (ATLAS v2 / R1.1, ISLES 2015, ISLES 2022 BIDS), which
includes phantom folders written by ``clinseg phantom brain --layout isles2022|atlas``. One sequence is the
input (DWI for the acute model, T1 for the chronic one, as the document trains on T1 alone). Each case is
prepared exactly as inference prepares it (``clinseg.tasks.stroke.model``): brain mask, the card's in-plane
spacing, intensity / brain median, zero outside the brain, padded to a multiple of 16.

Settings from the document: Adam 1e-3, learning rate x0.96 per epoch, batch 16 (default 8 here: CPU),
AGMR-Net loss for D-UNet and AGMR-Net, TSRL-Net's target-aware loss for TSRL-Net. Our choices: half of each
batch is drawn from slices holding lesion (most slices hold none), left-right flips and +-10 % intensity
scaling as augmentation, and the weights kept are those of the best validation Dice.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets.stroke import list_stroke_cases
from ..errors import InputError
from ..nets.stroke import DIVISOR, AGMRNet, DUNet, TSRLNet, slice_stacks
from ..preprocess import resample_to
from ..tasks.stroke.brain import brain_mask
from ..tasks.stroke.model import normalised_input, stack_probability, working_grid
from .loop import export_safetensors
from .stroke_losses import focal_loss, log_dice_loss, sobel_loss, tsrl_loss

NETS = {"dunet": DUNet, "agmr": AGMRNet, "tsrl": TSRLNet}


@dataclass
class StrokeTrainConfig:
    net: str = "dunet"
    width: float = 0.25
    sequence: str = "DWI"
    in_plane_mm: float = 2.0
    batch: int = 8
    lr: float = 1e-3
    decay: float = 0.96
    steps_per_epoch: int = 50
    epochs: int = 150
    val_cases: int = 2
    seed: int = 0
    max_minutes: float | None = None


@dataclass
class PreparedCase:
    case_id: str
    image: np.ndarray  # (K, J, I) normalised, padded
    lesion: np.ndarray  # (K, J, I) uint8, padded
    lesion_slices: np.ndarray


def prepare_case(image, lesion, sequence: str, in_plane_mm: float, case_id: str = "") -> PreparedCase:
    """One case on the network's grid, padded in-plane to a multiple of 16."""
    brain = brain_mask(image, "T1" if sequence.upper() == "T1" else "DWI")
    grid = working_grid(image, in_plane_mm)
    seen = resample_to(image.with_array(image.array.astype(np.float32)), grid, order=1)
    seen_brain = resample_to(image.with_array(brain.astype(np.uint8)), grid, order=0).array > 0
    if not lesion.same_grid(image):
        lesion = resample_to(lesion, image, order=0)
    seen_lesion = resample_to(lesion.with_array((lesion.array > 0).astype(np.uint8)), grid, order=0).array
    x = normalised_input(seen.array, seen_brain)
    nk, nj, ni = x.shape
    pad = ((0, 0), (0, (-nj) % DIVISOR), (0, (-ni) % DIVISOR))
    y = np.pad(seen_lesion.astype(np.uint8) * seen_brain, pad)
    return PreparedCase(case_id, np.pad(x, pad), y, np.nonzero(y.any(axis=(1, 2)))[0])


def load_cases(root: str | Path, sequence: str, in_plane_mm: float,
               log: Callable[[str], None] = print) -> list[PreparedCase]:
    cases = []
    for files in list_stroke_cases(root):
        if sequence not in files.images or not files.lesions:
            continue
        case = files.load()
        cases.append(prepare_case(case.images[sequence], case.lesion, sequence, in_plane_mm, files.case_id))
    if len(cases) < 2:
        raise InputError(str(root), f"holds {len(cases)} case(s) with a {sequence} image and a lesion mask; "
                         "training needs at least 2 (one to validate)")
    log(f"{len(cases)} cases with {sequence} from {root}")
    return cases


def _loss(net: str, output, target: torch.Tensor) -> torch.Tensor:
    if net == "tsrl":
        return tsrl_loss(output, target)
    z = output.logits
    loss = focal_loss(z, target) + log_dice_loss(z, target) + sobel_loss(z, target)
    if output.cpa_logits:  # AGMR-Net: + 0.15 x CPA supervision
        from .stroke_losses import cpa_bce

        loss = loss + 0.15 * cpa_bce(output.cpa_logits, target)
    return loss


def _batch(cases: list[PreparedCase], size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    stacks, targets = [], []
    shape = max((c.image.shape[1:] for c in cases), key=lambda s: s[0] * s[1])
    for n in range(size):
        case = cases[int(rng.integers(len(cases)))]
        use_lesion = n < size // 2 and case.lesion_slices.size
        k = int(rng.choice(case.lesion_slices)) if use_lesion else int(rng.integers(case.image.shape[0]))
        volume = torch.from_numpy(case.image[max(0, k - 2):k + 2])
        stack = slice_stacks(F.pad(volume, (0, 0, 0, 0, max(0, 2 - k), max(0, k + 2 - case.image.shape[0]))))
        x, y = stack[2], torch.from_numpy(case.lesion[k].astype(np.float32))[None]
        if rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        x = x * float(rng.uniform(0.9, 1.1))
        dj, di = shape[0] - x.shape[1], shape[1] - x.shape[2]
        stacks.append(F.pad(x, (0, di, 0, dj)))
        targets.append(F.pad(y, (0, di, 0, dj)))
    return torch.stack(stacks), torch.stack(targets)


def case_dice(network: torch.nn.Module, case: PreparedCase, threshold: float = 0.5) -> float:
    p = stack_probability(network, case.image, torch.device("cpu")) > threshold
    g = case.lesion > 0
    return float(2 * (p & g).sum() / max(1, p.sum() + g.sum())) if (p.any() or g.any()) else 1.0


def train_stroke(data: str | Path, out: str | Path, config: StrokeTrainConfig,
                 log: Callable[[str], None] = print) -> dict:
    """Train; writes ``model.safetensors`` (best validation Dice), ``log.csv`` and ``config`` into ``out``."""
    if config.net not in NETS:
        raise InputError("--net", f"unknown network '{config.net}' (use {', '.join(NETS)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    cases = load_cases(data, config.sequence, config.in_plane_mm, log)
    n_val = min(max(1, config.val_cases), len(cases) - 1)
    train_cases, val_cases = cases[:-n_val], cases[-n_val:]
    network = NETS[config.net](width=config.width)
    optimiser = torch.optim.Adam(network.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimiser, config.decay)
    start, best, rows = time.perf_counter(), -1.0, []
    weights = out / "model.safetensors"
    for epoch in range(config.epochs):
        network.train()
        losses = []
        for _ in range(config.steps_per_epoch):
            x, y = _batch(train_cases, config.batch, rng)
            loss = _loss(config.net, network(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        schedule.step()
        val = float(np.mean([case_dice(network, c) for c in val_cases]))
        minutes = (time.perf_counter() - start) / 60
        rows.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4), "val_dice": round(val, 4),
                     "minutes": round(minutes, 2)})
        log(f"epoch {epoch + 1}: loss {rows[-1]['loss']}, validation Dice {val:.3f}, {minutes:.1f} min")
        if val > best:
            best = val
            export_safetensors(network, weights, {"net": config.net, "width": str(config.width),
                                                  "epoch": str(epoch + 1), "val_dice": f"{val:.4f}"})
        if config.max_minutes is not None and minutes >= config.max_minutes:
            break
    with open(out / "log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "config.json").write_text(__import__("json").dumps(asdict(config), indent=1))
    params = sum(p.numel() for p in network.parameters())
    return {"weights": str(weights), "best_val_dice": best, "epochs": len(rows), "parameters": params,
            "train_cases": len(train_cases), "val_cases": len(val_cases)}
