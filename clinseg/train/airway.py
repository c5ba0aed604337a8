"""Training the thesis airway U-Net on ATM'22-layout data: cases, preprocessing, sampling, loss, validation.

Preprocessing as in the thesis: HU clipped to [-1000, 400] and scaled to [0, 1] (no resampling), then a crop
to the lung bounding box (threshold lung mask from ``clinseg.anatomy.lungs``, 5 mm margin), grown to hold
every labelled airway voxel so that the trachea above the lung apices is not cut from the training data.
``spacing`` (our option, not the thesis's) resamples each crop to one working spacing first, the spacing a
model card then asks inference to use.
Prepared cases are cached under ``<run>/cache`` as ``.npy`` (image float16, label uint8) and memory-mapped,
so a 66-case training set does not have to fit in RAM. ``skeleton_recall`` (our option) adds the label's tubed
centerline to the cache and, as a second label channel, to each batch (``losses.skeleton_recall_loss``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io.atomic import atomic_write
from ..nets.airway_unet import THESIS_PATCH, AirwayOutput, AirwayUNet
from ..post.skeleton import skeletonize
from ..preprocess import bounding_box, window
from ..volume import Volume
from .augment import AugmentConfig, augment_batch
from .init import initial_weights, load_initial_weights
from .loop import THESIS_MILESTONES, LoopConfig, TrainSummary, check_resumed_settings, train
from .losses import airway_loss
from .sampler import epoch_patches, foreground_points, grid_starts, read_patch, scaled_train_stride

HU_WINDOW = (-1000.0, 400.0)
VARIANTS = ("baseline", "ad", "ad_frl")
FG_POINTS = ("voxels", "centerline")
CACHE_VERSION = "v1"
# The thesis's held-out cases; test cases are never trained on, validation cases validate when present.
THESIS_VAL_IDS = ("ATM_029", "ATM_054", "ATM_055", "ATM_057", "ATM_091", "ATM_174", "ATM_215", "ATM_505", "ATM_688")
THESIS_TEST_IDS = (
    "ATM_001", "ATM_024", "ATM_034", "ATM_041", "ATM_060", "ATM_061", "ATM_074", "ATM_075", "ATM_080", "ATM_150",
    "ATM_158", "ATM_163", "ATM_197", "ATM_245", "ATM_246", "ATM_260", "ATM_266", "ATM_271", "ATM_638",
)  # fmt: skip


@dataclass(frozen=True)
class CaseFiles:
    id: str
    image_path: Path
    label_path: Path


def _read_layout(dataset_dir: Path) -> list[CaseFiles]:
    """``imagesTr/<id>_0000.nii.gz`` with ``labelsTr/<id>.nii.gz`` (nnU-Net) or ``labelsTr/<id>_0000.nii.gz``
    (ATM'22 release). Stand-in until ``clinseg.datasets.atm22`` exists."""
    images = dataset_dir / "imagesTr"
    if not images.is_dir():
        raise InputError(str(dataset_dir), "no imagesTr folder (expected the ATM'22 / nnU-Net layout)")
    cases = []
    for image in sorted(images.glob("*_0000.nii.gz")):
        case_id = image.name[: -len("_0000.nii.gz")]
        for name in (f"{case_id}.nii.gz", image.name):
            label = dataset_dir / "labelsTr" / name
            if label.is_file():
                cases.append(CaseFiles(case_id, image, label))
                break
    return cases


def list_cases(dataset_dir: str | Path) -> list[CaseFiles]:
    """Labelled cases of an ATM'22-layout folder, sorted by id."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise InputError(str(dataset_dir), "dataset folder not found")
    try:
        from ..datasets.atm22 import read_atm22
    except ImportError:
        cases = _read_layout(dataset_dir)
    else:
        found = [c for c in read_atm22(dataset_dir) if getattr(c, "label_path", None) is not None]
        cases = [CaseFiles(c.id, Path(c.image_path), Path(c.label_path)) for c in found]
        cases = [c for c in cases if c.label_path.is_file()]
    if not cases:
        raise InputError(str(dataset_dir), "no labelled cases (imagesTr/*_0000.nii.gz with labelsTr/...)")
    return sorted(cases, key=lambda c: c.id)


def lung_crop_box(ct: Volume) -> tuple[slice, slice, slice]:
    """The inference pipeline's lung box (same margin, so training sees the crops inference will);
    the whole volume when no lungs are found."""
    from ..anatomy.lungs import chest_masks, lung_box

    try:
        return lung_box(ct, chest_masks(ct))
    except InputError:
        return tuple(slice(0, n) for n in ct.shape)  # type: ignore[return-value]


def _union(a: Sequence[slice], b: Sequence[slice] | None) -> tuple[slice, slice, slice]:
    if b is None:
        return tuple(a)  # type: ignore[return-value]
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))  # type: ignore[return-value]


@dataclass(frozen=True)
class PreparedCase:
    id: str
    image: np.ndarray  # float16 [0, 1], memory-mapped
    label: np.ndarray  # uint8 {0, 1}, memory-mapped
    foreground: np.ndarray  # (M, 3) int32 airway voxel indices (subsample)
    skeleton: np.ndarray | None = None  # uint8 {0, 1} tubed centerline of the label, memory-mapped, if asked


def _skeleton(case: PreparedCase) -> np.ndarray:
    """The case's tubed centerline; an error if it was prepared without one."""
    if case.skeleton is None:
        raise ValueError(f"case {case.id} was prepared without its skeleton")
    return case.skeleton


def tubed_skeleton(label: np.ndarray) -> np.ndarray:
    """The label's 3-D centerline grown by one voxel (26-neighbourhood) and kept inside the label: a thin tube
    along every branch, as thick in a subsegmental bronchus as in the trachea."""
    from scipy.ndimage import binary_dilation

    centerline = skeletonize(label)
    tube = binary_dilation(centerline, structure=np.ones((3, 3, 3), dtype=bool)) & (np.asarray(label) > 0)
    return tube.astype(np.uint8)


def _spacing_tag(spacing: tuple[float, float, float] | None) -> str:
    return "native" if spacing is None else "x".join(f"{s:g}" for s in spacing)


def prepare_case(
    case: CaseFiles, cache_dir: Path, spacing: tuple[float, float, float] | None = None, skeleton: bool = False
) -> PreparedCase:
    """Read, lung-crop, (optionally) resample to ``spacing`` (i, j, k mm) and window one case, caching the result
    (re-used by later runs on the same folder with the same spacing); ``skeleton`` adds the tubed centerline."""
    from ..io import read_volume
    from ..preprocess import CT_AIR_HU, crop, fill_ct_padding, resample

    stem = cache_dir / CACHE_VERSION / _spacing_tag(spacing) / case.id
    paths = {k: stem.with_name(f"{case.id}.{k}.npy") for k in ("image", "label", "foreground")}
    if not all(p.is_file() for p in paths.values()):
        ct = read_volume(case.image_path)
        label = read_volume(case.label_path)
        if label.shape != ct.shape:
            raise InputError(case.label_path.name, f"label shape {label.shape} differs from the CT's {ct.shape}")
        mask = (np.asarray(label.array) > 0.5).astype(np.uint8)
        box = _union(lung_crop_box(ct), bounding_box(mask, 2))
        image, label = crop(fill_ct_padding(ct), box), crop(ct.with_array(mask), box)
        if spacing is not None:
            image = resample(image, spacing, order=1, default_value=CT_AIR_HU)
            label = resample(label.with_array(label.array.astype(np.float32)), spacing, order=1)
        arrays = {
            "image": window(image.array, *HU_WINDOW).astype(np.float16),
            "label": np.ascontiguousarray(label.array > 0.5).astype(np.uint8),
        }
        arrays["foreground"] = foreground_points(arrays["label"])
        for key in ("image", "label", "foreground"):  # foreground last: its presence marks a complete entry
            with atomic_write(paths[key]) as tmp:
                np.save(tmp, arrays[key])
    tube = None
    if skeleton:
        tube_path = stem.with_name(f"{case.id}.skeleton.npy")
        if not tube_path.is_file():
            with atomic_write(tube_path) as tmp:
                np.save(tmp, tubed_skeleton(np.load(paths["label"])))
        tube = np.load(tube_path, mmap_mode="r")
    return PreparedCase(
        case.id,
        np.load(paths["image"], mmap_mode="r"),
        np.load(paths["label"], mmap_mode="r"),
        np.load(paths["foreground"]),
        tube,
    )


def split_cases(cases: Sequence[CaseFiles], val_count: int | None, seed: int) -> tuple[list, list]:
    """``(train, validation)``: the thesis's test cases are left out; its validation cases validate when
    present, else ``val_count`` (default: 10 %, at least 1 when two or more cases) are drawn by ``seed``."""
    usable = [c for c in cases if c.id not in THESIS_TEST_IDS]
    thesis_val = [c for c in usable if c.id in THESIS_VAL_IDS]
    if thesis_val and val_count is None:
        return [c for c in usable if c.id not in THESIS_VAL_IDS], thesis_val
    if val_count is None:
        val_count = max(1, round(0.1 * len(usable))) if len(usable) >= 2 else 0
    if val_count >= len(usable):
        raise InputError("--val-cases", f"{val_count} validation cases leave none of {len(usable)} to train on")
    order = np.random.default_rng(seed).permutation(len(usable))
    val_ids = {usable[i].id for i in order[:val_count]}
    return [c for c in usable if c.id not in val_ids], [c for c in usable if c.id in val_ids]


@dataclass
class AirwayTrainConfig:
    variant: str = "baseline"
    width: float = 1.0
    patch: tuple[int, int, int] = THESIS_PATCH
    stride: tuple[int, int, int] | None = None  # default: the thesis's train stride scaled to the patch
    batch: int = 2
    iters_per_epoch: int | None = None  # default: every grid cuboid once per epoch
    frl: str = "adaptive"  # for ad_frl: "fixed" learns axis weights for exactly ``patch``
    fg_fraction: float = 1 / 3
    fg_points: str = "voxels"  # where forced cuboids centre: any airway voxel, or "centerline" (our option)
    augment: bool = True
    val_count: int | None = None
    val_every: int = 1
    seed: int = 0
    spacing: tuple[float, float, float] | None = None  # None: native spacing (the thesis)
    ad_detach: bool = False
    skeleton_recall: float = 0.0  # weight of the skeleton recall term (0: off, the thesis's loss)
    bce: float = 0.0  # weight of a binary cross-entropy term (0: off, the thesis's loss)
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def needs_skeleton(self) -> bool:
        return self.skeleton_recall > 0 or self.fg_points == "centerline"

    def check(self) -> None:
        if self.variant not in VARIANTS:
            raise InputError("--variant", f"unknown variant {self.variant!r} (choose {', '.join(VARIANTS)})")
        if len(self.patch) != 3 or any(p < 16 or p % 16 for p in self.patch):
            raise InputError("--patch", f"needs three sizes that are multiples of 16, got {self.patch}")
        if self.fg_points not in FG_POINTS:
            raise InputError("--fg-points", f"must be {' or '.join(FG_POINTS)}, got {self.fg_points!r}")
        if not 0 <= self.fg_fraction <= 1:
            raise InputError("--fg-fraction", f"must be between 0 and 1, got {self.fg_fraction}")
        if self.frl not in ("adaptive", "fixed"):
            raise InputError("--frl", f"must be adaptive or fixed, got {self.frl!r}")
        if self.batch < 1 or (self.iters_per_epoch is not None and self.iters_per_epoch < 1):
            raise InputError("--batch", "batch size and iterations per epoch must be positive")
        if not self.width > 0:
            raise InputError("--width", f"must be positive, got {self.width}")
        for flag, weight in (("--skeleton-recall", self.skeleton_recall), ("--bce", self.bce)):
            if not 0 <= weight <= 10:
                raise InputError(flag, f"weight must be between 0 and 10, got {weight}")
        if self.spacing is not None and (len(self.spacing) != 3 or not all(0.2 <= s <= 5.0 for s in self.spacing)):
            raise InputError("--spacing", f"needs three spacings between 0.2 and 5 mm, got {self.spacing}")

    def network_kwargs(self) -> dict:
        return {
            "in_channels": 1,
            "width": self.width,
            "attention_distillation": self.variant in ("ad", "ad_frl"),
            "frl": self.frl if self.variant == "ad_frl" else None,
            "frl_input_size": list(self.patch),
        }

    def describe(self) -> dict:
        """The settings that define a run (compared on ``--resume``)."""
        data = asdict(self)
        data.pop("augment_config")
        data["patch"] = list(self.patch)
        data["stride"] = list(self.stride) if self.stride else None
        for option in ("skeleton_recall", "bce"):
            if not data[option]:
                data.pop(option)  # runs from before the option compare equal on --resume
        if self.fg_points == "voxels":
            data.pop("fg_points")
        if self.spacing is None:
            data.pop("spacing")  # runs from before the option compare equal on --resume
        else:
            data["spacing"] = list(self.spacing)
        return data


def build_model(config: AirwayTrainConfig) -> AirwayUNet:
    """The untrained network of a run's variant."""
    return AirwayUNet(**config.network_kwargs())


def _seed_of(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, dtype=np.uint64)[0] >> 1)


class AirwayTask:
    """``TrainTask`` for the airway U-Net (see ``clinseg.train.loop``)."""

    def __init__(self, config: AirwayTrainConfig, train: list[PreparedCase], val: list[PreparedCase]) -> None:
        config.check()
        if not train:
            raise InputError("dataset", "no training cases")
        self.config = config
        self.train_cases = train
        self.val_cases = val
        self.stride = tuple(config.stride) if config.stride else scaled_train_stride(config.patch)
        grid = sum(len(grid_starts(case.image.shape, config.patch, self.stride)) for case in train)
        iterations = config.iters_per_epoch or -(-grid // config.batch)
        self.patches_per_epoch = iterations * config.batch
        self.forced_points = [self._forced_points(case) for case in train]

    def _forced_points(self, case: PreparedCase) -> np.ndarray:
        """Where forced cuboids may centre. Airway voxels are mostly trachea and main bronchi; centreline
        voxels weigh every branch by its length instead, so the thin peripheral branches (most of the tree's
        length, most of its misses) are drawn far more often."""
        if self.config.fg_points == "voxels":
            return case.foreground
        return foreground_points(_skeleton(case))

    def batches(self, epoch: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        c = self.config
        refs = epoch_patches(
            [case.image.shape for case in self.train_cases],
            self.forced_points,
            c.patch,
            self.stride,
            self.patches_per_epoch,
            c.seed,
            epoch,
            c.fg_fraction,
        )
        augment = c.augment_config if c.augment else AugmentConfig.none()
        for iteration, first in enumerate(range(0, len(refs) - c.batch + 1, c.batch)):
            chunk = refs[first : first + c.batch]
            images = np.stack([read_patch(self.train_cases[r.case].image, r.start, c.patch) for r in chunk])
            labels = np.stack([self._label_channels(r.case, r.start) for r in chunk])
            image = torch.from_numpy(images.astype(np.float32))[:, None].to(device)
            label = torch.from_numpy(labels.astype(np.float32)).to(device)
            generator = torch.Generator().manual_seed(_seed_of(c.seed, epoch, iteration))
            yield augment_batch(image, label, generator, augment)

    def _label_channels(self, index: int, start: tuple[int, int, int]) -> np.ndarray:
        """``(C, D, H, W)``: the label patch, then the tubed skeleton's when skeleton recall is on (both go
        through the same spatial augmentation as extra channels)."""
        case = self.train_cases[index]
        arrays = [case.label] + ([_skeleton(case)] if self.config.skeleton_recall else [])
        return np.stack([read_patch(a, start, self.config.patch) for a in arrays])

    def loss(self, output, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(output, AirwayOutput):
            logits, features = output.logits, output.decoder_features
        else:
            logits, features = output, None
        skeleton = label[:, 1:2] if label.shape[1] > 1 else None
        loss = airway_loss(logits, label[:, :1], features, detach_target=self.config.ad_detach, skeleton=skeleton,
                           skeleton_weight=self.config.skeleton_recall, bce_weight=self.config.bce)  # fmt: skip
        return loss, logits

    @torch.no_grad()
    def predict(self, model: nn.Module, image: np.ndarray, device: torch.device) -> np.ndarray:
        """Airway probability of a prepared image: tiles overlapping by a quarter (the inference default),
        probabilities averaged."""
        patch = self.config.patch
        stride = tuple(max(1, p - p // 4) for p in patch)
        total = np.zeros(image.shape, dtype=np.float32)
        hits = np.zeros(image.shape, dtype=np.float32)
        for start in grid_starts(image.shape, patch, stride):
            tile = torch.from_numpy(read_patch(image, start, patch).astype(np.float32))[None, None].to(device)
            logits = model(tile)
            prob = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
            region = tuple(slice(s, min(s + p, n)) for s, p, n in zip(start, patch, image.shape))
            total[region] += prob[tuple(slice(0, r.stop - r.start) for r in region)]
            hits[region] += 1
        return total / np.maximum(hits, 1)

    def validate(self, model: nn.Module, epoch: int, device: torch.device) -> float | None:
        """Mean Dice (threshold 0.5) over the validation cases, every ``val_every`` epochs."""
        if not self.val_cases or (epoch + 1) % max(1, self.config.val_every):
            return None
        scores = []
        for case in self.val_cases:
            pred = self.predict(model, case.image, device) > 0.5
            gt = np.asarray(case.label) > 0
            denominator = pred.sum() + gt.sum()
            scores.append(1.0 if denominator == 0 else 2.0 * float((pred & gt).sum()) / float(denominator))
        return float(np.mean(scores))

    def metadata(self) -> dict[str, str]:
        return {
            "network": "airway_unet:AirwayUNet",
            "network_kwargs": json.dumps(self.config.network_kwargs()),
            "variant": self.config.variant,
            "patch": ",".join(str(p) for p in self.config.patch),
            "preprocessing": f"HU clip {HU_WINDOW} -> [0, 1], lung bounding-box crop, "
            + ("native spacing" if self.config.spacing is None else f"resampled to {list(self.config.spacing)} mm"),
            "output": "1 logit channel; airway = sigmoid > 0.5",
        }


def run_training(
    dataset_dir: str | Path,
    out_dir: str | Path,
    config: AirwayTrainConfig,
    epochs: int,
    device: torch.device,
    resume: bool = False,
    max_minutes: float | None = None,
    lr: float = 3e-3,
    amp: bool = True,
    milestones: tuple[float, ...] = THESIS_MILESTONES,
    log: Callable[[str], None] = print,
    cache_dir: str | Path | None = None,
    init: str | None = None,
) -> TrainSummary:
    """Prepare the cases, build the network and run ``clinseg.train.loop.train``; returns its summary.

    A new run needs an empty or missing ``out_dir``; ``resume`` needs the same settings as the run it
    continues (``run.json``), except ``epochs``, which may grow. ``cache_dir`` (default ``out_dir/cache``)
    may be shared by runs on the same data: entries are keyed by spacing and written atomically. ``init`` (a
    ``.safetensors`` file or an installed model id) gives the starting weights of a fine-tuning run; they must
    fit the variant and width exactly, and their SHA-256 is recorded.
    """
    config.check()
    torch.manual_seed(config.seed)  # network initialisation
    model = build_model(config)
    initial = initial_weights(init) if init else None
    if initial is not None:  # checked before anything is written; a resumed run then loads its checkpoint
        load_initial_weights(model, initial[0], init)
    train_files, val_files = split_cases(list_cases(dataset_dir), config.val_count, config.seed)
    out = Path(out_dir)
    settings_path = out / "run.json"
    settings = {**config.describe(), "lr": lr, "milestones": list(milestones)}
    if initial is not None:
        settings["init"] = initial[1]
    if resume:
        check_resumed_settings(settings_path, settings)
    elif out.exists() and any(out.iterdir()):
        raise InputError(str(out), "run folder exists and is not empty (choose another or pass --resume)")
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        with atomic_write(settings_path) as tmp:
            tmp.write_text(json.dumps(settings, indent=2))
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    log(f"{len(train_files)} training and {len(val_files)} validation cases; preparing (cached in {cache})")
    train_cases = [prepare_case(c, cache, config.spacing, config.needs_skeleton) for c in train_files]
    val_cases = [prepare_case(c, cache, config.spacing) for c in val_files]
    task = AirwayTask(config, train_cases, val_cases)
    if initial is not None and not resume:
        log(f"starting from {initial[1]}")
    loop = LoopConfig(out, epochs, lr=lr, milestones=tuple(milestones), seed=config.seed, device=device, amp=amp,
                      resume=resume, max_minutes=max_minutes, log=log)  # fmt: skip
    return train(model, task, loop)
