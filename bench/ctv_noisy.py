"""Document 002's noisy-label experiment, small and in 3-D: CTV patches of head & neck phantoms, 0/25/50/75 % of
the training labels dilated or eroded, trained with plain per-sample BCE and with QAM + OCM weighting.

Usage: .venv/bin/python bench/ctv_noisy.py [--steps 80] [--batch 4] [--noise low] [--fractions 0 0.25 0.5 0.75]

The thesis's experiment is 2-D (JSRT chest X-rays, batch 32, 256^2 images, noise n ~ U{5..13} px "high").
Ours, for a shared 2-core CPU: 16 x 48 x 48 patches (2 x 2 x 3 mm) around each phantom's CTV, 12 training and
4 test phantoms, batch 4, ``--steps`` Adam steps (segmentation 1e-3, QAM 1e-4 as the thesis), a small CTV U-Net
(widths 8/16/32, residual + SE, no recurrence) and a small QAM (widths 8/16/32). Noise "low" (n ~ U{1..8}
voxels) by default: at 2 mm voxels "high" erases most CTVs. Printed: test Dice (clean labels) per setting.
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import time

import numpy as np
import torch

from clinseg.nets.ctv_unet import CTVUNet
from clinseg.nets.quality import QualityAwarenessModule
from clinseg.phantoms.headneck import generate_headneck
from clinseg.phantoms.label_noise import noisy_labels
from clinseg.phantoms.oar_stage1 import window
from clinseg.train.noisy_labels import QualityWeightedLoss, per_sample_bce

PATCH = (16, 48, 48)
TRAIN_SEEDS, TEST_SEEDS = range(301, 313), range(313, 317)


def patch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, CTV mask) patches of PATCH size centred on the phantom's CTV."""
    ph = generate_headneck(seed, spacing=(2.0, 2.0, 3.0))
    ctv = ph.ctv.array > 0
    centre = np.round(np.argwhere(ctv).mean(axis=0)).astype(int)
    image = np.pad(window(ph.ct.array), [(p, p) for p in PATCH], constant_values=0.0)
    mask = np.pad(ctv, [(p, p) for p in PATCH])
    box = tuple(slice(c + p - p // 2, c + p + p - p // 2) for c, p in zip(centre, PATCH))
    return image[box], mask[box]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(pred & truth) / max(np.count_nonzero(pred) + np.count_nonzero(truth), 1)


def train_and_test(images, labels, tests, quality: bool, steps: int, batch: int, seed: int) -> float:
    torch.manual_seed(seed)
    net = CTVUNet(widths=(8, 16, 32), z_poolings=2, recurrent=False)
    groups = [{"params": net.parameters(), "lr": 1e-3}]
    weighting = None
    if quality:
        weighting = QualityWeightedLoss(QualityAwarenessModule(widths=(8, 16, 32)))
        groups.append({"params": weighting.parameters(), "lr": 1e-4})
    optimiser = torch.optim.Adam(groups)
    x_all = torch.from_numpy(np.stack(images))[:, None].float()
    y_all = torch.from_numpy(np.stack(labels))[:, None].float()
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(steps):
        pick = torch.from_numpy(rng.choice(len(images), size=batch, replace=False))
        x, y = x_all[pick], y_all[pick]
        losses = per_sample_bce(net(x), y)
        loss = weighting(x, y, losses).loss if weighting is not None else losses.mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    net.eval()
    scores = []
    with torch.no_grad():
        for image, truth in tests:
            pred = net(torch.from_numpy(image)[None, None].float())[0, 0].numpy() > 0
            scores.append(dice(pred, truth))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--noise", default="low", choices=("low", "high"))
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    train = [patch(s) for s in TRAIN_SEEDS]
    tests = [patch(s) for s in TEST_SEEDS]
    images = [image for image, _ in train]
    clean = [mask for _, mask in train]
    print(f"patches {PATCH}, {len(train)} train / {len(tests)} test phantoms, batch {args.batch}, "
          f"{args.steps} steps, noise {args.noise}")
    print(f"{'noisy labels':>12} {'labels Dice':>11} {'BCE':>7} {'QAM+OCM':>8}")
    for fraction in args.fractions:
        labels, _ = noisy_labels(clean, fraction, args.noise, seed=7, in_plane=False)
        label_dice = np.mean([dice(n, c) for n, c in zip(labels, clean)])
        plain = train_and_test(images, labels, tests, False, args.steps, args.batch, seed=1)
        weighted = train_and_test(images, labels, tests, True, args.steps, args.batch, seed=1)
        print(f"{fraction:>12.0%} {label_dice:>11.3f} {plain:>7.3f} {weighted:>8.3f}", flush=True)
    print(f"thesis (JSRT, 2-D, high noise): clean 0.915 / 0.911; 50 % 0.652 / 0.912; 75 % 0.621 / 0.892. "
          f"bench time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
