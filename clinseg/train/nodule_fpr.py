"""Training the nodule false-positive reducer (``clinseg.nets.nodule_fpr.NoduleFPR``) on phantom candidates.

Samples are the classical engine's own candidates (``detect_candidates`` in the search region) of training
phantoms: a candidate whose centre lies within a nodule's radius is positive, every other one negative
(vessel junctions, crossings, scars, noise). Each positive is also read at ``JITTER`` shifted centres (up
to a third of its radius) so that the few positives are seen off-centre as the filter finds them.
Training: BCE on balanced batches (a quarter positive), Adam, random flips and axis permutations (the
patches are isotropic), for a fixed number of minutes on one thread.

Run: ``python -m clinseg.train.nodule_fpr --seeds 100-139 --val 140-149 --minutes 30 --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..nets.nodule_fpr import NoduleFPR
from ..tasks.nodule.candidates import Candidate, detect_candidates
from ..tasks.nodule.fpr import network_inputs, patches, roi_half_mm, scalars
from ..tasks.nodule.region import search_region

JITTER = 4
POSITIVE_SHARE = 0.25
N_NODULES, N_DISTRACTORS = 8, 6


def phantom_samples(ct, masks, nodules, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Patches, scalars, ROI sizes and labels of every candidate of one phantom (plus jittered positives)."""
    region = search_region(masks, ct.spacing)
    cands = detect_candidates(ct.array, region, ct.spacing)
    centres = np.array([n.center_lps for n in nodules]).reshape(-1, 3)
    radii = np.array([n.diameter_mm / 2 for n in nodules])
    lps = ct.index_to_physical(np.array([c.kji[::-1] for c in cands]).reshape(-1, 3))
    labels = np.array([bool(len(radii)) and bool(np.any(np.linalg.norm(centres - p, axis=1) <= radii)) for p in lps])
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


def seed_samples(seed: int) -> dict[str, np.ndarray]:
    """``phantom_samples`` of the small chest phantom of one seed."""
    from ..anatomy.lungs import chest_masks
    from ..phantoms.chest import generate_chest
    from ..preprocess import fill_ct_padding

    ph = generate_chest(seed, preset="small", n_nodules=N_NODULES, n_distractors=N_DISTRACTORS)
    masks = chest_masks(ph.ct)
    return phantom_samples(fill_ct_padding(ph.ct), masks, ph.nodules, np.random.default_rng(seed))


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


def train(data: dict[str, np.ndarray], val: dict[str, np.ndarray] | None, minutes: float, batch: int = 64,
          lr: float = 1e-3, seed: int = 0, log=print) -> tuple[NoduleFPR, dict]:
    """A ``NoduleFPR`` trained for ``minutes`` of wall time; returns it and the training record."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network = NoduleFPR()
    optimiser = torch.optim.Adam(network.parameters(), lr=lr, weight_decay=1e-5)
    pos, neg = np.flatnonzero(data["label"] > 0), np.flatnonzero(data["label"] == 0)
    n_pos = max(1, int(round(POSITIVE_SHARE * batch)))
    start, step, record = time.perf_counter(), 0, {"steps": 0, "history": []}
    deadline = start + 60 * minutes
    while time.perf_counter() < deadline:
        network.train()
        idx = np.concatenate([rng.choice(pos, n_pos), rng.choice(neg, batch - n_pos)])
        x, s, h = network_inputs(data["patch"][idx], data["scalar"][idx], data["half"][idx])
        y = torch.from_numpy(data["label"][idx])
        loss = F.binary_cross_entropy_with_logits(network(_augment(x, rng), s, h), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 200 == 0:
            row = {"step": step, "minutes": round((time.perf_counter() - start) / 60, 1), "loss": round(float(loss), 4)}
            if val is not None:
                row.update({f"val_{k}": round(v, 4) for k, v in evaluate(network, val).items()})
            record["history"].append(row)
            log(json.dumps(row))
    record.update(steps=step, minutes=round((time.perf_counter() - start) / 60, 1), batch=batch, lr=lr)
    network.eval()
    return network, record


def _seed_range(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b or a) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="100-139", help="training phantom seeds, e.g. 100-139 (never 200+)")
    parser.add_argument("--val", default="140-149", help="validation phantom seeds")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--data", type=Path, help="cache of the samples (.npz), built when missing")
    parser.add_argument("--out", type=Path, required=True, help="folder for model.safetensors and record.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train_seeds, val_seeds = _seed_range(args.seeds), _seed_range(args.val)
    if max(train_seeds + val_seeds) >= 200:
        raise SystemExit("seeds 200 and above are the held-out benchmark; train below 200")
    sets = {}
    for name, seeds in (("train", train_seeds), ("val", val_seeds)):
        path = args.data.with_suffix(f".{name}.npz") if args.data else None
        if path is not None and path.exists():
            sets[name] = dict(np.load(path))
            continue
        sets[name] = concat([seed_samples(s) for s in seeds])
        if path is not None:
            np.savez(path, **sets[name])
    print(f"train {len(sets['train']['label'])} samples ({int(sets['train']['label'].sum())} positive), "
          f"val {len(sets['val']['label'])}", flush=True)
    network, record = train(sets["train"], sets["val"], args.minutes, log=lambda m: print(m, flush=True))
    record["val"] = evaluate(network, sets["val"])
    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(args.out / "model.safetensors"))
    record.update(train_seeds=args.seeds, val_seeds=args.val,
                  parameters=sum(p.numel() for p in network.parameters()))
    (args.out / "record.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "history"}), flush=True)


if __name__ == "__main__":
    main()
