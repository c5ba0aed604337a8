"""Training the nodule false-positive reducer (``clinseg.nets.nodule_fpr.NoduleFPR``): ``clinseg train nodule``.

Samples are the classical engine's own candidates (``detect_candidates`` in the search region) of each CT:
a candidate whose centre lies within a nodule's radius is positive, every other one negative (vessel
junctions, crossings, scars, noise). The nodules come from the source (``case_samples`` takes the CT and
its (centre, diameter) list whatever the layout: generated phantom seeds, phantom folders, LUNA16
annotations, LIDC reader consensus; see ``clinseg.train.nodule_data``). Each positive is also read at
``JITTER`` shifted centres (up to a third of its radius) so that the few positives are seen off-centre as
the filter finds them. Training: BCE on balanced batches (a quarter positive), Adam, random flips and axis
permutations (the patches are isotropic), for a fixed number of minutes (or steps).

Run: ``clinseg train nodule --layout phantom --seeds 100-139 --val-seeds 140-149 --minutes 30 --out DIR``
(``python -m clinseg.train.nodule_fpr --seeds ... --val ...`` forwards to it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..nets.nodule_fpr import NoduleFPR
from ..tasks.nodule.candidates import (
    GGO_SIGMAS_MM,
    MAX_CANDIDATES,
    MIN_RESPONSE,
    SIGMAS_MM,
    Candidate,
    detect_candidates,
)
from ..tasks.nodule.fpr import network_inputs, patches, roi_half_mm, scalars
from ..tasks.nodule.region import search_region
from .loop import follow_cosine

JITTER = 4
POSITIVE_SHARE = 0.25
N_NODULES, N_DISTRACTORS = 8, 6
PHANTOM_PRESET = "small"  # generated phantoms: this preset's field of view (and, by default, its 1.4 mm grid)
SPACING_RANGE_MM = (0.4, 3.0)


Reference = tuple[np.ndarray, float]  # (centre in LPS mm, diameter in mm)


def _within(points: np.ndarray, refs: list[Reference]) -> np.ndarray:
    """bool per point: inside the sphere (centre, diameter) of any reference (the LUNA16 hit rule)."""
    if not refs or not len(points):
        return np.zeros(len(points), bool)
    centres = np.array([np.asarray(c, float) for c, _ in refs]).reshape(-1, 3)
    radii = np.array([d / 2 for _, d in refs])
    return np.any(np.linalg.norm(points[:, None] - centres[None], axis=-1) <= radii, axis=1)


def case_samples(ct, nodules: list[Reference], rng: np.random.Generator, ignore: list[Reference] = (),
                 subject: str = "CT", masks=None) -> dict[str, np.ndarray]:
    """Patches, scalars, ROI sizes and labels of every candidate of one CT (plus jittered positives).

    ``nodules`` are the positives whatever the source (phantom truth, LUNA16 annotations, LIDC consensus);
    candidates inside an ``ignore`` sphere (LIDC nodules below the consensus) are neither and are dropped.
    ``masks``: the chest masks when already known (then ``ct`` is taken as already padding-filled).
    """
    from ..anatomy.lungs import chest_masks
    from ..preprocess import fill_ct_padding

    if masks is None:
        masks = chest_masks(ct, subject)  # before the padding is filled, as the engine does
        ct = fill_ct_padding(ct)
    cands = detect_candidates(ct.array, search_region(masks, ct.spacing), ct.spacing)
    lps = ct.index_to_physical(np.array([c.kji[::-1] for c in cands], float).reshape(-1, 3))
    keep = ~_within(lps, list(ignore)) | _within(lps, nodules)
    cands, lps = [c for c, k in zip(cands, keep) if k], lps[keep]
    labels = _within(lps, nodules)
    extra: list[Candidate] = []
    spacing = np.asarray(ct.spacing[::-1], float)
    for c, positive in zip(cands, labels):
        if positive:
            for _ in range(JITTER):
                shift = rng.normal(size=3)
                shift *= rng.uniform(0.3, 1.0) * c.radius_mm / 3 / max(np.linalg.norm(shift), 1e-9)
                extra.append(Candidate(c.kji + shift / spacing, c.sigma_mm, c.response, c.blobness, c.ggo))
    every = cands + extra
    return {"patch": patches(ct.array, ct.spacing, np.array([c.kji for c in every]).reshape(-1, 3)),
            "scalar": scalars(every), "half": roi_half_mm(every),
            "label": np.concatenate([labels, np.ones(len(extra), bool)]).astype(np.float32),
            "jittered": np.concatenate([np.zeros(len(cands), bool), np.ones(len(extra), bool)])}


def seed_samples(seed: int, shape: tuple[int, int, int] | None = None, n_nodules: int = N_NODULES,
                 spacing: tuple[float, float, float] | None = None) -> dict[str, np.ndarray]:
    """``case_samples`` of the small chest phantom of one seed (``shape``: a smaller grid, for tests).

    ``n_nodules`` above the benchmark's 8 packs more positives into each phantom: the nodules the reducer
    ranks worst (3-4 mm, on a vessel) are rare among the candidates, and a phantom costs ~40 s to build.
    ``spacing`` (i, j, k mm) samples the same field of view (the preset's 224 x 224 x 179 mm) on another grid,
    e.g. clinical 0.8 x 0.8 x 1.25 mm, where a 3 mm nodule is more than the 2 voxels it is at 1.4 mm."""
    from ..phantoms.chest import generate_chest

    ph = generate_chest(seed, preset=PHANTOM_PRESET, shape=shape, spacing=spacing, n_nodules=n_nodules,
                        n_distractors=N_DISTRACTORS)
    return case_samples(ph.ct, [(n.center_lps, n.diameter_mm) for n in ph.nodules], np.random.default_rng(seed),
                        subject=f"phantom {seed}")


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    dims = [d for d in (2, 3, 4) if rng.uniform() < 0.5]
    if dims:
        x = x.flip(dims)
    perm = rng.permutation(3)
    return x.permute(0, 1, *(2 + perm)).contiguous()


def evaluate(network: NoduleFPR, data: dict[str, np.ndarray]) -> dict[str, float]:
    """Loss and ROC AUC on the un-jittered samples of ``data``."""
    keep = ~data["jittered"]
    logits = []
    network.eval()
    with torch.inference_mode():
        for s in range(0, int(keep.sum()), 256):
            idx = np.flatnonzero(keep)[s:s + 256]
            logits.append(network(*network_inputs(data["patch"][idx], data["scalar"][idx], data["half"][idx])))
    z = torch.cat(logits)
    y = torch.from_numpy(data["label"][keep])
    loss = float(F.binary_cross_entropy_with_logits(z, y))
    pos, neg = z[y > 0].numpy(), z[y == 0].numpy()
    auc = float(np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :])) \
        if len(pos) and len(neg) else float("nan")
    return {"loss": loss, "auc": auc}


def draw_negatives(rng: np.random.Generator, last_loss: np.ndarray, n_uniform: int, n_hard: int) -> np.ndarray:
    """Indices into the negatives: ``n_uniform`` drawn uniformly, ``n_hard`` in proportion to ``last_loss``."""
    return np.concatenate([rng.choice(len(last_loss), n_uniform),
                           rng.choice(len(last_loss), n_hard, p=last_loss / last_loss.sum())]).astype(int)


def train(data: dict[str, np.ndarray], val: dict[str, np.ndarray] | None, minutes: float, batch: int = 64,
          lr: float = 1e-3, seed: int = 0, log=print, max_steps: int | None = None, every: int = 200,
          checkpoint: Callable[[NoduleFPR, dict], None] | None = None, init: dict | None = None,
          hard_share: float = 0.0, cosine: bool = False) -> tuple[NoduleFPR, dict]:
    """A ``NoduleFPR`` trained for ``minutes`` of wall time (or ``max_steps``); returns it and the training record.

    ``init``: a state dict to start from. ``hard_share``: the share of each batch's negatives drawn in
    proportion to their last seen loss (the rest uniformly): vessel junctions and crossings, which score like
    small nodules, are few among the candidates, so uniform batches rarely show them. ``cosine``: the learning
    rate decays to 5 % of ``lr`` along a half cosine over the run (by wall time, or steps with ``max_steps``).
    Every ``every`` steps and at the last one a history row is logged and ``checkpoint(network, row)`` called."""
    if not (data["label"] > 0).any() or not (data["label"] == 0).any():
        raise InputError("training data", f"{int((data['label'] > 0).sum())} positive and "
                         f"{int((data['label'] == 0).sum())} negative candidates: both are needed")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network = NoduleFPR()
    if init is not None:
        network.load_state_dict(init)
    optimiser = torch.optim.Adam(network.parameters(), lr=lr, weight_decay=1e-5)
    pos, neg = np.flatnonzero(data["label"] > 0), np.flatnonzero(data["label"] == 0)
    n_pos = max(1, int(round(POSITIVE_SHARE * batch)))
    n_hard = int(round(hard_share * (batch - n_pos)))
    neg_loss = np.ones(len(neg))  # last seen loss of each negative; 1 (a hard one's) until it is seen
    start, step, record = time.perf_counter(), 0, {"steps": 0, "history": []}
    deadline = start + 60 * minutes
    while time.perf_counter() < deadline and (max_steps is None or step < max_steps):
        network.train()
        if cosine:
            follow_cosine(optimiser, lr, step, max_steps, (time.perf_counter() - start) / 60, minutes)
        which = draw_negatives(rng, neg_loss, batch - n_pos - n_hard, n_hard)
        idx = np.concatenate([rng.choice(pos, n_pos), neg[which]])
        x, s, h = network_inputs(data["patch"][idx], data["scalar"][idx], data["half"][idx])
        y = torch.from_numpy(data["label"][idx])
        each = F.binary_cross_entropy_with_logits(network(_augment(x, rng), s, h), y, reduction="none")
        loss = each.mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        neg_loss[which] = each[n_pos:].detach().numpy() + 1e-3
        step += 1
        if step % every == 0 or step == max_steps or time.perf_counter() >= deadline:  # the last step logs too
            row = {"step": step, "minutes": round((time.perf_counter() - start) / 60, 1),
                   "loss": round(float(loss.detach()), 4)}
            if val is not None:
                row.update({f"val_{k}": round(v, 4) for k, v in evaluate(network, val).items()})
            record["history"].append(row)
            log(json.dumps(row))
            if checkpoint is not None:
                checkpoint(network, row)
    record.update(steps=step, minutes=round((time.perf_counter() - start) / 60, 1), batch=batch, lr=lr)
    network.eval()
    return network, record


def phantom_spacing(text: str) -> tuple[float, float, float] | None:
    """``I,J,K`` (mm) -> the grid of generated phantoms; None for the preset's own (1.4 mm: the default and the
    samples cached before the option existed)."""
    from ..phantoms.chest import PRESETS

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    lo, hi = SPACING_RANGE_MM
    if len(values) != 3 or not all(lo <= v <= hi for v in values):
        raise InputError("--spacing", f"'{text}' is not three spacings I,J,K between {lo:g} and {hi:g} mm")
    return None if values == tuple(PRESETS[PHANTOM_PRESET][0]) else values  # type: ignore[return-value]


def seed_range(text: str) -> list[int]:
    """``100-139``, ``7`` or a comma list of them (``100-139,150-199``) -> the seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        try:
            seeds += range(int(a), int(b or a) + 1)
        except ValueError:
            raise InputError("--seeds", f"'{text}' is not a seed, a range A-B or a comma list of them") from None
    return seeds


@dataclass
class NoduleTrainConfig:
    layout: str = "phantom"
    seeds: list[int] = field(default_factory=list)  # phantom layout without --data: generated seeds
    val_seeds: list[int] = field(default_factory=list)
    val_cases: int = 0  # folders: the last N cases held out
    consensus: int = 3  # LIDC: readers needed for a positive
    minutes: float = 30.0
    max_steps: int | None = None
    batch: int = 64
    lr: float = 1e-3
    seed: int = 0
    every: int = 200
    shape: tuple[int, int, int] | None = None  # generated phantoms: a smaller grid than the small preset's
    nodules_per_phantom: int = N_NODULES  # generated training phantoms (validation ones keep N_NODULES)
    spacing: tuple[float, float, float] | None = None  # generated phantoms' grid (None: the preset's 1.4 mm)
    init: str | None = None  # starting weights: a registered model id or a .safetensors file
    hard_share: float = 0.0  # share of each batch's negatives drawn by their last loss (see ``train``)
    cosine: bool = False  # learning rate along a half cosine


def _cached(cache: Path | None, key: dict, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Samples built once per source and settings (building them is most of a short run)."""
    if cache is None:
        return build()
    # the candidate settings make the samples too: a cache from other settings is another cache
    key = {**key, "candidates": [MIN_RESPONSE, MAX_CANDIDATES, list(SIGMAS_MM), list(GGO_SIGMAS_MM)]}
    path = cache / f"samples-{hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        return dict(np.load(path))
    data = build()
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def sample_sets(data: str | Path | None, config: NoduleTrainConfig, cache: Path | None = None,
                log: Callable[[str], None] = print) -> tuple[dict, dict | None, dict]:
    """Training and validation samples (None without validation cases) and what they came from."""
    from .nodule_data import case_names, iter_cases

    def build(cases: list, kind: str) -> dict[str, np.ndarray] | None:
        if not cases:
            return None
        if data is None:
            n = config.nodules_per_phantom if kind == "train" else N_NODULES
            # the defaults stay out of the key: samples cached before these options keep their names
            key = {"seeds": cases, "shape": config.shape, **({"nodules": n} if n != N_NODULES else {}),
                   **({"spacing": list(config.spacing)} if config.spacing is not None else {})}
            make = lambda: concat([seed_samples(s, config.shape, n, config.spacing) for s in cases])  # noqa: E731
        else:
            key = {"root": str(Path(data).resolve()), "layout": config.layout, "cases": cases,
                   "consensus": config.consensus}

            def make() -> dict[str, np.ndarray]:
                rng, parts = np.random.default_rng(config.seed), []
                for case in iter_cases(data, config.layout, cases, config.consensus):
                    parts.append(case_samples(case.ct, case.nodules, rng, case.ignore, subject=case.name))
                    log(f"{kind} {case.name}: {len(case.nodules)} nodule(s), {int((~parts[-1]['jittered']).sum())} "
                        f"candidates, {int(parts[-1]['label'][~parts[-1]['jittered']].sum())} on a nodule")
                return concat(parts)
        return _cached(cache, key, make)

    if data is None:
        if config.layout != "phantom" or not config.seeds:
            raise InputError("--data", f"a {config.layout} folder is needed (only the phantom layout generates seeds)")
        if max(config.seeds + config.val_seeds) >= 200:
            raise InputError("--seeds", "seeds 200 and above are the held-out benchmark; train below 200")
        train_cases, val_cases = config.seeds, config.val_seeds
    else:
        names = case_names(data, config.layout)
        if config.val_cases >= len(names):
            raise InputError(str(data), f"{len(names)} case(s): too few to hold out {config.val_cases}")
        cut = len(names) - config.val_cases
        train_cases, val_cases = names[:cut], names[cut:]
    train_set, val_set = build(train_cases, "train"), build(val_cases, "val")
    real = ~train_set["jittered"]
    info = {"layout": config.layout, "source": str(data) if data is not None else "generated phantom seeds",
            "train_cases": len(train_cases), "val_cases": len(val_cases),
            "cases": [str(c) for c in train_cases], "val": [str(c) for c in val_cases],
            "samples": {"train": len(train_set["label"]), "train_candidates": int(real.sum()),
                        "train_on_nodule": int(train_set["label"][real].sum()),
                        "val": len(val_set["label"]) if val_set is not None else 0}}
    if config.layout == "lidc":
        info["consensus"] = config.consensus
    if data is None:
        info["nodules_per_phantom"] = config.nodules_per_phantom
        info["spacing_mm"] = list(config.spacing) if config.spacing is not None else None  # None: the preset's
    return train_set, val_set, info


def run_nodule_training(data: str | Path | None, out: str | Path, config: NoduleTrainConfig, model_id: str,
                        cache: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Samples -> training -> ``out/model.safetensors`` (checkpointed), ``log.csv``, ``record.json``, and the
    card + pack (``out/model/``, ``out/<model_id>.zip``)."""
    from .loop import export_safetensors, row_checkpointer
    from .nodule_card import nodule_card, write_pack

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_set, val_set, info = sample_sets(data, config, cache, log)
    log(f"train {info['samples']['train']} samples ({info['samples']['train_on_nodule']} candidates on a nodule), "
        f"val {info['samples']['val']}")
    weights = out / "model.safetensors"
    checkpoint = row_checkpointer(weights, out / "log.csv", "NoduleFPR")

    init, provenance = None, None
    if config.init:
        from .init import initial_weights

        init, provenance = initial_weights(config.init)
    network, record = train(train_set, val_set, config.minutes, config.batch, config.lr, config.seed, log,
                            config.max_steps, config.every, checkpoint, init, config.hard_share, config.cosine)
    record.update(init=provenance, hard_share=config.hard_share, cosine=config.cosine)
    export_safetensors(network, weights, {"network": "NoduleFPR", "step": str(record["steps"])})
    # denser training phantoms would set the prior to their own nodule share: scale it to 8 a phantom
    density = N_NODULES / info.get("nodules_per_phantom", N_NODULES)
    share = info["samples"]["train_on_nodule"] * density / max(info["samples"]["train_candidates"], 1)
    record.update(
        validation=evaluate(network, val_set) if val_set is not None else None, data=info,
        parameters=sum(p.numel() for p in network.parameters()), seed=config.seed,
        # the logit shift to the candidates' own nodule share (see clinseg.tasks.nodule.fpr.PRIOR_SHIFT)
        prior_shift=round(float(np.log(share / (1 - share)) - np.log(POSITIVE_SHARE / (1 - POSITIVE_SHARE))), 3)
        if 0 < share < 1 else None)
    (out / "record.json").write_text(json.dumps(record, indent=1))
    folder, pack = write_pack(nodule_card(model_id, weights, config.layout, record), weights, out)
    return {"weights": str(weights), "model": str(folder), "pack": str(pack), "steps": record["steps"],
            "validation": record["validation"], "samples": info["samples"]}


def main() -> None:
    """The former entry point, kept for the shipped card's command line: ``clinseg train nodule`` on seeds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="100-139", help="training phantom seeds, e.g. 100-139 (never 200+)")
    parser.add_argument("--val", default="140-149", help="validation phantom seeds")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--data", type=Path, help="folder caching the samples, built when missing")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    args = parser.parse_args()
    from ..cli import main as cli_main

    argv = ["train", "nodule", "--layout", "phantom", "--seeds", args.seeds, "--val-seeds", args.val,
            "--minutes", str(args.minutes), "--out", str(args.out), "--threads", "1"]
    raise SystemExit(cli_main(argv + (["--cache", str(args.data)] if args.data else [])))


if __name__ == "__main__":
    main()
