"""Training the two-stage OAR model of document 001 (``clinseg train oar``).

Stage 1: a multi-class ``OARUNet`` (background + every organ of ``HN_ORGANS``) on the whole scan resampled to a
coarse fixed spacing, trained on random cuboids with the thesis's focal loss; most cuboids are centred on a voxel
of one organ drawn uniformly, so that small organs are seen as often as the brain. Stage 2: one binary
``OARUNet`` per small organ on a fixed-size crop at a finer spacing, centred on the organ's centre moved by a
random offset (stage 1's localisation error at inference), with class-weighted cross-entropy (the thesis's).
Both go into one ``OARCascade`` weights file.

Augmentation: the thesis's small rotation (+-5 degrees) and scale (0.9-1.1); translation comes from the random
cuboid position. No flips: a left-right flip would turn a left parotid into a right one under the same label.
Every random draw derives from ``(seed, epoch)`` (the loop's resume contract).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nets.oar_unet import OARCascade, OARUNet
from ..preprocess import resample, window
from ..terminology import HN_ORGANS
from ..volume import Volume
from .augment import AugmentConfig, augment_batch
from .loop import LoopConfig, TrainSummary, train
from .oar_data import OarCase
from .oar_losses import class_weighted_cross_entropy, focal_loss
from .sampler import read_patch

HU_WINDOW = (-1000.0, 600.0)  # the thesis's window, scaled to [0, 1]
STAGE1_SPACING = (2.0, 2.0, 3.0)  # i, j, k mm
STAGE2_SPACING = (1.0, 1.0, 1.5)
STAGE2_ORGANS = ("Optic nerve L", "Optic nerve R", "Optic chiasm", "Lens L", "Lens R", "Cochlea L", "Cochlea R",
                 "Lacrimal L", "Lacrimal R")
AUGMENT = AugmentConfig(flip_p=0.0, affine_p=0.5, max_rotation_deg=5.0, scale_range=(0.9, 1.1), gamma_p=0.15,
                        bias_p=0.0, blur_p=0.1, noise_p=0.15, noise_sigma=0.02)
N_CLASSES = len(HN_ORGANS) + 1


def cascade_kwargs(config: OarTrainConfig, stage2_keys) -> tuple[dict, dict]:
    """``OARCascade`` arguments (stage 1, stage 2 per organ key) of a training configuration."""
    stage1 = {"out_channels": N_CLASSES, "width": config.width, "dropout": 0.0}
    stage2 = {"width": config.stage2_width, "dropout": 0.0}
    if config.norm != "none":
        stage1["norm"] = stage2["norm"] = config.norm
    return stage1, {k: dict(stage2) for k in stage2_keys}


def organ_key(name: str) -> str:
    """Module key of an organ's stage-2 model (``"Optic nerve L"`` -> ``"optic_nerve_l"``)."""
    return name.lower().replace(" ", "_")


def prepare_image(ct: Volume, spacing: Sequence[float]) -> Volume:
    """CT resampled (linear, air outside) to ``spacing`` and windowed to float32 [0, 1]."""
    seen = resample(ct, tuple(spacing), order=1, default_value=HU_WINDOW[0])
    return seen.with_array(window(seen.array, *HU_WINDOW))


@dataclass
class OarTrainConfig:
    width: int = 8
    patch: tuple[int, int, int] = (32, 64, 64)  # D, H, W at STAGE1_SPACING
    batch: int = 2
    iters_per_epoch: int = 25
    fg_fraction: float = 0.8
    seed: int = 0
    spacing: tuple[float, float, float] = STAGE1_SPACING
    stage2_organs: tuple[str, ...] = STAGE2_ORGANS
    stage2_width: int = 8
    stage2_patch: tuple[int, int, int] = (24, 48, 48)  # D, H, W at STAGE2_SPACING
    stage2_spacing: tuple[float, float, float] = STAGE2_SPACING
    stage2_jitter_mm: float = 6.0
    val_count: int = 2
    augment: bool = True
    focal_gamma: float = 2.0
    dice_weight: float = 0.0  # 0: the thesis's focal loss alone; > 0 adds a multi-class soft Dice term
    loss: str = "focal"  # stage 1's voxel loss: "focal" (the thesis's) or "ce" (plain cross-entropy)
    norm: str = "none"  # "none" (the thesis's table) or "batch" (BatchNorm after each convolution)
    validate_every: int = 0  # stage-1 epochs between validation passes; 0: once, at the end
    extra: dict = field(default_factory=dict)


@dataclass
class PreparedCase:
    name: str
    image: np.ndarray  # float32 [0, 1] at the stage-1 spacing
    labels: np.ndarray  # uint8
    organ_points: dict[int, np.ndarray]  # label -> (M, 3) voxel indices (subsampled)
    crops: dict[str, tuple[np.ndarray, np.ndarray]]  # stage-2 organ -> (image, binary mask) around it


def _points(labels: np.ndarray, rng: np.random.Generator, limit: int = 2000) -> dict[int, np.ndarray]:
    out = {}
    for value in np.unique(labels):
        if value == 0:
            continue
        idx = np.argwhere(labels == value)
        if len(idx) > limit:
            idx = idx[rng.choice(len(idx), limit, replace=False)]
        out[int(value)] = idx.astype(np.int32)
    return out


def prepare_case(case: OarCase, config: OarTrainConfig) -> PreparedCase:
    """Stage-1 arrays of one case, plus a stage-2 crop around each of its small organs."""
    rng = np.random.default_rng(config.seed)
    image = prepare_image(case.ct, config.spacing)
    labels = resample(case.labels, config.spacing, order=0).array.astype(np.uint8)
    crops: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    fine = None
    for organ in config.stage2_organs:
        value = {s.name: s.label for s in HN_ORGANS}[organ]
        if not (case.labels.array == value).any():
            continue
        if fine is None:
            fine = (prepare_image(case.ct, config.stage2_spacing),
                    resample(case.labels, config.stage2_spacing, order=0).array)
        mask = fine[1] == value
        if not mask.any():
            continue
        centre = np.argwhere(mask).mean(0).round().astype(int)
        reach = np.array(config.stage2_patch) // 2 + np.ceil(config.stage2_jitter_mm / np.array(
            config.stage2_spacing)[::-1]).astype(int) + 1
        start = centre - reach
        size = 2 * reach
        crops[organ] = (read_patch(fine[0].array, start, size, fill=0.0),
                        read_patch(mask.astype(np.uint8), start, size, fill=0))
    return PreparedCase(case.name, image.array, labels, _points(labels, rng), crops)


def respace_prepared(case: PreparedCase, spacing: Sequence[float], new_spacing: Sequence[float],
                     seed: int = 0) -> PreparedCase:
    """A prepared case's stage-1 arrays moved from ``spacing`` to ``new_spacing`` (same centre, as
    ``prepare_case`` would grid them); stage-2 crops unchanged. Reuses a cache instead of rebuilding phantoms."""
    image = resample(Volume(case.image, tuple(spacing)), tuple(new_spacing), order=1, default_value=0.0).array
    labels = resample(Volume(case.labels, tuple(spacing)), tuple(new_spacing), order=0).array.astype(np.uint8)
    return PreparedCase(case.name, image.astype(np.float32), labels, _points(labels, np.random.default_rng(seed)),
                        case.crops)


def save_prepared(case: PreparedCase, path: Path) -> None:
    crops = {f"crop_image/{k}": v[0] for k, v in case.crops.items()} | {
        f"crop_mask/{k}": v[1] for k, v in case.crops.items()}
    points = {f"points/{k}": v for k, v in case.organ_points.items()}
    np.savez_compressed(path, image=case.image.astype(np.float16), labels=case.labels, **crops, **points)


def load_prepared(path: Path) -> PreparedCase:
    data = np.load(path)
    crops: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    points: dict[int, np.ndarray] = {}
    for key in data.files:
        kind, _, name = key.partition("/")
        if kind == "crop_image":
            crops[name] = (data[key].astype(np.float32), data[f"crop_mask/{name}"])
        elif kind == "points":
            points[int(name)] = data[key]
    return PreparedCase(path.stem, data["image"].astype(np.float32), data["labels"], points, crops)


def _batch(images: list[np.ndarray], labels: list[np.ndarray], rng: np.random.Generator, augment: bool,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.stack([i if i.ndim == 4 else i[None] for i in images]).astype(np.float32))  # (N, C, ...)
    y = torch.from_numpy(np.stack(labels)[:, None].astype(np.int64))
    if augment:
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        x, y = augment_batch(x, y, generator, AUGMENT)
    return x.to(device), y.to(device)


class Stage1Task:
    """``TrainTask`` of the multi-class stage-1 network."""

    def __init__(self, train_cases: list[PreparedCase], val_cases: list[PreparedCase], config: OarTrainConfig,
                 validate_every: int = 1, log: Callable[[str], None] = print) -> None:
        self.cases, self.val, self.config, self.every, self.log = train_cases, val_cases, config, validate_every, log

    def batches(self, epoch: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch, 1])
        patch = np.array(cfg.patch)
        for _ in range(cfg.iters_per_epoch):
            images, labels = [], []
            for _ in range(cfg.batch):
                case = self.cases[int(rng.integers(len(self.cases)))]
                shape = np.array(case.image.shape)
                if case.organ_points and rng.random() < cfg.fg_fraction:
                    organs = sorted(case.organ_points)
                    pts = case.organ_points[organs[int(rng.integers(len(organs)))]]
                    centre = pts[int(rng.integers(len(pts)))]
                    start = centre - rng.integers(patch // 4, patch - patch // 4 + 1)
                else:
                    start = np.array([int(rng.integers(0, max(n - p, 0) + 1)) for n, p in zip(shape, patch)])
                images.append(read_patch(case.image, start, patch, fill=0.0))
                labels.append(read_patch(case.labels, start, patch, fill=0))
            yield _batch(images, labels, rng, cfg.augment, device)

    def loss(self, output: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.loss == "ce":
            loss = F.cross_entropy(output.float(), label[:, 0].long())
        else:
            loss = focal_loss(output, label[:, 0], gamma=self.config.focal_gamma)
        if self.config.dice_weight > 0:
            loss = loss + self.config.dice_weight * multiclass_soft_dice(output, label[:, 0])
        # The loop's running Dice is binary: organ (any) versus background.
        foreground = torch.logsumexp(output[:, 1:], dim=1, keepdim=True) - output[:, :1]
        return loss, foreground

    def validate(self, model: nn.Module, epoch: int, device: torch.device) -> float | None:
        if not self.val or (epoch + 1) % self.every:
            return None
        per_case = [stage1_dice(model, c, self.config.patch, device) for c in self.val]
        names = {s.label: s.name for s in HN_ORGANS}
        organs = sorted({v for d in per_case for v in d})
        self.log("val Dice: " + ", ".join(f"{names[v]} {np.mean([d[v] for d in per_case if v in d]):.2f}"
                                          for v in organs))
        return float(np.mean([np.nanmean(list(d.values())) for d in per_case]))

    def metadata(self) -> dict[str, str]:
        return {"network": "OARUNet", "config": str(asdict(self.config))}


def multiclass_soft_dice(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 -`` the mean soft Dice over the organ classes present in the batch (background left out)."""
    prob = torch.softmax(logits.float(), dim=1)[:, 1:]
    onehot = F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1)[:, 1:].float()
    dims = (0, *range(2, prob.dim()))
    inter, total = (prob * onehot).sum(dims), (prob + onehot).sum(dims)
    present = onehot.sum(dims) > 0
    if not present.any():
        return prob.sum() * 0.0
    return 1.0 - ((2 * inter + eps) / (total + eps))[present].mean()


def predict_stage1(model: nn.Module, image: np.ndarray, patch: Sequence[int], device: torch.device) -> np.ndarray:
    """Arg-max labels of ``image`` (float32 [0, 1]) through the sliding-window engine."""
    from ..engine import SlidingWindowInferer

    inferer = SlidingWindowInferer(tuple(patch), overlap=0.25, batch_size=2, device=device, precision="float32")
    with torch.no_grad():
        logits = inferer(image, model)
    return logits.argmax(0).numpy().astype(np.uint8)


def stage1_dice(model: nn.Module, case: PreparedCase, patch: Sequence[int], device: torch.device) -> dict[int, float]:
    """Dice per organ label present in the case, at the stage-1 spacing."""
    pred = predict_stage1(model, case.image, patch, device)
    out = {}
    for value in np.unique(case.labels):
        if value:
            a, b = pred == value, case.labels == value
            out[int(value)] = 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())
    return out


class Stage2Task:
    """``TrainTask`` of one organ's binary stage-2 network on jittered crops."""

    def __init__(self, organ: str, crops: list[tuple[np.ndarray, np.ndarray]], config: OarTrainConfig,
                 patch: Sequence[int] | None = None, dice_weight: float = 0.0) -> None:
        self.organ, self.crops, self.config = organ, crops, config
        self.patch = np.array(patch if patch is not None else config.stage2_patch)
        self.dice_weight = dice_weight  # > 0: plain CE + this x soft Dice instead of class-weighted CE

    def batches(self, epoch: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch, 2, len(self.organ)])
        patch = self.patch
        for _ in range(cfg.iters_per_epoch):
            images, labels = [], []
            for _ in range(cfg.batch):
                image, mask = self.crops[int(rng.integers(len(self.crops)))]  # image: (D, H, W) or (C, D, H, W)
                slack = np.array(mask.shape) - patch
                start = np.array([int(rng.integers(0, s + 1)) for s in slack])
                images.append(np.stack([read_patch(c, start, patch, fill=0.0) for c in image.reshape(-1, *mask.shape)]))
                labels.append(read_patch(mask, start, patch, fill=0))
            yield _batch(images, labels, rng, cfg.augment, device)

    def loss(self, output: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dice_weight > 0:
            loss = F.cross_entropy(output.float(), label[:, 0].long()) + self.dice_weight * multiclass_soft_dice(
                output, label[:, 0])
        else:
            loss = class_weighted_cross_entropy(output, label[:, 0])
        return loss, output[:, 1:] - output[:, :1]

    def validate(self, model: nn.Module, epoch: int, device: torch.device) -> float | None:
        return None

    def metadata(self) -> dict[str, str]:
        return {"network": "OARUNet", "organ": self.organ}


@dataclass
class OarTrainResult:
    cascade: OARCascade
    stage1: TrainSummary
    stage2: dict[str, TrainSummary]
    val_dice: dict[str, float]  # organ -> stage-1 Dice on the validation cases (coarse grid)


def run_training(train_cases: list[PreparedCase], val_cases: list[PreparedCase], out_dir: str | Path,
                 config: OarTrainConfig, epochs: int, stage2_epochs: int, device: torch.device, lr: float = 1e-3,
                 max_minutes: float | None = None, stage2_max_minutes: float | None = None, amp: bool = True,
                 log: Callable[[str], None] = print, init: dict[str, torch.Tensor] | None = None) -> OarTrainResult:
    """Stage 1, then each stage-2 organ (``stage2_epochs`` 0: none); weights gathered into one cascade."""
    out = Path(out_dir)
    torch.manual_seed(config.seed)
    stage1 = OARUNet(out_channels=N_CLASSES, width=config.width, norm=config.norm, dropout=0.0)
    if init is not None:  # fine-tune: the stage-1 weights of an earlier cascade
        stage1.load_state_dict({k[len("stage1."):]: v for k, v in init.items() if k.startswith("stage1.")})
    loop = LoopConfig(out / "stage1", epochs, lr=lr, milestones=(0.8,), seed=config.seed, device=device, amp=amp,
                      max_minutes=max_minutes, log=log)
    summary1 = train(stage1, Stage1Task(train_cases, val_cases, config,
                                        validate_every=config.validate_every or epochs, log=log), loop)
    stage2_models: dict[str, OARUNet] = {}
    summaries2: dict[str, TrainSummary] = {}
    for organ in config.stage2_organs if stage2_epochs > 0 else ():
        crops = [c.crops[organ] for c in train_cases if organ in c.crops]
        if not crops:
            continue
        model = OARUNet(out_channels=2, width=config.stage2_width, norm=config.norm, dropout=0.0)
        loop2 = LoopConfig(out / "stage2" / organ_key(organ), stage2_epochs, lr=lr, milestones=(0.8,),
                           seed=config.seed, device=device, amp=amp, max_minutes=stage2_max_minutes, log=log)
        summaries2[organ] = train(model, Stage2Task(organ, crops, config), loop2)
        stage2_models[organ_key(organ)] = model
    cascade = OARCascade(*cascade_kwargs(config, stage2_models))
    cascade.stage1.load_state_dict(stage1.state_dict())
    for key, model in stage2_models.items():
        cascade.stage2[key].load_state_dict(model.state_dict())
    names = {s.label: s.name for s in HN_ORGANS}
    stage1.eval()
    per_organ: dict[str, list[float]] = {}
    for case in val_cases:
        for value, d in stage1_dice(stage1, case, config.patch, device).items():
            per_organ.setdefault(names[value], []).append(d)
    return OarTrainResult(cascade, summary1, summaries2, {k: float(np.mean(v)) for k, v in per_organ.items()})
