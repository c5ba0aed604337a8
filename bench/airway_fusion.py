"""Would fusing a network with the classical engine reach further down the tree? Offline study on held-out cases.

For each case of ``bench/airway_heldout.py``'s ``--cache``, the classical lumen and each model's probability map
(lung box, float16) are computed once and kept in ``--store``; then, for every threshold, these masks are scored
with the ATM'22 metrics after the pipeline's own post-processing (component through the trachea seed, holes
filled):

* ``classical``; ``<model> t<T>``: the network alone at threshold T;
* ``<model> + classical t<T>``: the union of both;
* ``<model> beyond classical t<T>``: the classical lumen, plus the network's voxels more than ``MARGIN`` voxels
  outside it and the necks joining those to it. The network's rim around bronchi the classical engine already
  has is dropped (its boundary is the less precise one); branches it finds beyond the classical tips are kept.

Prints mean DSC / TD / BD / precision per variant (and per case with ``--per-case``).

Run: ``.venv/bin/python bench/airway_fusion.py --cache runs/heldout-cases --store runs/fusion
--models airway-unet-phantom``
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from airway_heldout import cached
from scipy import ndimage

from clinseg.metrics.airway import airway_metrics, reference_for
from clinseg.tasks.airway.model import AirwayProbability, airway_probability

KEYS = ("dice", "td", "bd", "precision")
MARGIN = 2  # voxels: the network's rim around the classical lumen that is not added


def _inputs(key: str, cache: Path, store: Path, models: list[str]):
    """CT, label, trachea seed, classical mask and model probabilities (box, float16) of one case; stored."""
    from clinseg.anatomy.lungs import chest_masks
    from clinseg.anatomy.trachea import find_trachea
    from clinseg.preprocess import fill_ct_padding
    from clinseg.tasks.airway.classical import segment_airway_classical

    name, ct, gt = cached(None, key, cache)
    masks = None
    ct_filled = None
    path = store / f"{key}_classical.npz"
    todo = [m for m in models if not (store / f"{key}_{m}.npz").is_file()]
    if not path.is_file() or todo:
        masks = chest_masks(ct)
        ct_filled = fill_ct_padding(ct)
        seed = find_trachea(ct_filled, masks)
    if not path.is_file():
        mask, _ = segment_airway_classical(ct_filled, masks, seed)
        np.savez_compressed(path, mask=np.packbits(mask), seed=np.asarray(seed))
    for model in todo:
        probability = airway_probability(ct_filled, masks, model, "cpu")
        bounds = np.array([[s.start, s.stop] for s in probability.box])
        np.savez_compressed(store / f"{key}_{model}.npz", p=probability.values.astype(np.float16), box=bounds)
    stored = np.load(path)
    classical = np.unpackbits(stored["mask"])[: int(np.prod(ct.shape))].reshape(ct.shape).astype(bool)
    probabilities = {}
    for model in models:
        z = np.load(store / f"{key}_{model}.npz")
        probabilities[model] = (tuple(slice(int(a), int(b)) for a, b in z["box"]), z["p"])
    return name, ct, gt, stored["seed"], classical, probabilities


def beyond(classical: np.ndarray, network: np.ndarray, margin: int = MARGIN) -> np.ndarray:
    """The classical lumen plus the network's voxels farther than ``margin`` voxels from it, with their necks."""
    extra = network & ~classical
    far = extra & ~ndimage.binary_dilation(classical, iterations=margin)
    necks = extra & ndimage.binary_dilation(far, iterations=margin + 1)
    return classical | far | necks


def variants(classical: np.ndarray, probabilities: dict, thresholds: list[float]):
    """(label, mask) of every fusion variant."""
    yield "classical", classical
    for model, (box, p) in probabilities.items():
        for t in thresholds:
            network = AirwayProbability(box, p, t).mask(classical.shape)
            yield f"{model} t{t:g}", network
            yield f"{model} + classical t{t:g}", network | classical
            yield f"{model} beyond classical t{t:g}", beyond(classical, network)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="bench/airway_heldout.py's case cache")
    parser.add_argument("--cases", help="comma-separated cache keys (default: every case in the cache)")
    parser.add_argument("--models", default="airway-unet-phantom", help="comma-separated installed model ids")
    parser.add_argument("--thresholds", default="0.5,0.7,0.85")
    parser.add_argument("--store", type=Path, required=True, help="keeps classical masks and probabilities")
    parser.add_argument("--per-case", action="store_true")
    parser.add_argument("--json", help="write per-case figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from clinseg.post.components import fill_holes
    from clinseg.tasks.airway.pipeline import _airway_component

    keys = args.cases.split(",") if args.cases else sorted(p.stem for p in args.cache.glob("*.json"))
    models = [m for m in args.models.split(",") if m]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    args.store.mkdir(parents=True, exist_ok=True)
    figures: dict[str, dict[str, list[float]]] = {}
    for key in keys:
        name, ct, gt, seed, classical, probabilities = _inputs(key, args.cache, args.store, models)
        ref = reference_for(gt.array > 0)
        for label, mask in variants(classical, probabilities, thresholds):
            kept = fill_holes(_airway_component(mask, seed, ct.spacing, None))
            m = airway_metrics(kept, ref)
            figures.setdefault(label, {})[key] = [round(float(m[k]), 4) for k in KEYS]
            if args.per_case:
                print(f"{name:34s} {label:44s} " + " ".join(f"{v:.3f}" for v in figures[label][key]), flush=True)
    print(f"\n{'mean over ' + str(len(keys)) + ' cases':44s} DSC   TD    BD    precision")
    for label, per_case in figures.items():
        print(f"{label:44s} " + " ".join(f"{v:.3f}" for v in np.mean(list(per_case.values()), axis=0)))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
