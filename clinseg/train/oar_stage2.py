"""Stage-2 OAR models on anchored crops (``python -m clinseg.train.oar_stage2``).

Stage 1 at its coarse spacing misses the lenses, optic nerves and cochleae, so their crops are placed from organs
it does find (``clinseg.tasks.oar.anchors``): the mean centroid of anchor organs plus an offset learned here as
the mean organ-minus-anchor vector over the training masks. One binary model per organ type serves both sides:
right-side crops are mirrored, and the two sides' offsets are averaged in the left frame.

Training crops are placed by that very rule, once from the reference anchors and once from the anchors stage 1
finds on the training phantom (its real localisation error); each is cut with a margin of ``jitter_mm`` around
the crop, and every sample is a random sub-crop of it (a further uniform +-``jitter_mm`` shift). A spec with
``stage1_prob`` gives its model a second channel, stage 1's probability of the organ on the same crop: ``prepare``
keeps stage 1's probability maps of the target organs (its working grid, cut to the case's box) for that.

Steps: ``prepare`` (per case: the CT and labels cropped to the region of interest at their native grid, with the
reference and stage-1 centroids; cached), ``learn_rules``, ``anchored_crops``, ``train_models``, then one cascade
(the given stage 1 + these models) and its card.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..nets.oar_unet import OARCascade, OARUNet
from ..preprocess import bounding_box, crop, resample_to
from ..tasks.oar.anchors import AnchorRule, anchor_point, crop_grid, organ_centroids
from ..tasks.oar.model import STAGE1_PROB, covering_box, stage2_input
from ..tasks.oar.organs import CONTAINS
from ..terminology import HN_ORGANS, RIGHT
from ..volume import Volume
from .loop import LoopConfig, export_safetensors, train
from .oar import HU_WINDOW, STAGE2_SPACING, OarTrainConfig, Stage2Task
from .oar_data import LABEL_OF, OarCase

ROI_MARGIN_MM = 60.0
# Stage 1's voxels a stage-2 model takes from an organ inside another (the cord) go back to the container (the
# canal), not to background: a thinner cord left holes in the canal (canal Dice 0.846 -> 0.837 in the experiment).
CONTAINED_IN = {inner: outer for outer, inners in CONTAINS.items() for inner in inners}


@dataclass(frozen=True)
class Stage2Spec:
    key: str  # module key in the cascade, shared by the organ's sides
    anchors: Mapping[str, tuple[str, ...]]  # organ -> the organs its crop is anchored on
    patch: tuple[int, int, int]  # D, H, W at ``spacing`` (multiples of 8)
    spacing: tuple[float, float, float] = STAGE2_SPACING  # i, j, k mm
    within_crop: bool = False  # the organ outgrows any crop (cord, canal): stage 1's mask is replaced only inside it
    stage1_prob: bool = False  # a second input channel: stage 1's probability of the organ on the crop

    @property
    def inputs(self) -> tuple[str, ...]:
        return ("ct", STAGE1_PROB) if self.stage1_prob else ("ct",)


DEFAULT_SPECS = (
    Stage2Spec("lens", {"Lens L": ("Eye L",), "Lens R": ("Eye R",)}, (16, 32, 32)),
    Stage2Spec("optic_nerve", {"Optic nerve L": ("Eye L",), "Optic nerve R": ("Eye R",)}, (16, 48, 48)),
    Stage2Spec("cochlea", {"Cochlea L": ("Brainstem",), "Cochlea R": ("Brainstem",)}, (16, 48, 48)),
    Stage2Spec("lacrimal", {"Lacrimal L": ("Eye L",), "Lacrimal R": ("Eye R",)}, (16, 32, 32)),
    Stage2Spec("submandibular", {"Submandibular L": ("Mandible",), "Submandibular R": ("Mandible",)}, (24, 48, 48),
               (1.5, 1.5, 2.5)),
    # Mid-size organs stage 1 does find, if coarsely: the crop is centred on stage 1's own organ, refined at 1.5 mm.
    Stage2Spec("parotid", {"Parotid L": ("Parotid L",), "Parotid R": ("Parotid R",)}, (32, 40, 40), (2.0, 2.0, 2.5)),
    Stage2Spec("submandibular_self", {"Submandibular L": ("Submandibular L",),
                                      "Submandibular R": ("Submandibular R",)}, (24, 40, 40), (1.5, 1.5, 2.0)),
    Stage2Spec("brainstem", {"Brainstem": ("Brainstem",)}, (32, 32, 32), (2.0, 2.0, 2.5)),
    Stage2Spec("eye", {"Eye L": ("Eye L",), "Eye R": ("Eye R",)}, (24, 40, 40), (1.0, 1.0, 1.5)),
    Stage2Spec("spinal_canal", {"Spinal canal": ("Spinal canal",)}, (56, 32, 32), (1.5, 1.5, 4.0), within_crop=True),
    Stage2Spec("spinal_cord", {"Spinal cord": ("Spinal cord",)}, (56, 32, 32), (1.5, 1.5, 4.0), within_crop=True),
    # The same crops with stage 1's probability as a second channel: the glands are painted 5 HU under muscle in
    # the phantoms, so a model that sees the CT alone lost to stage 1's whole-scan context.
    Stage2Spec("submandibular_prob", {"Submandibular L": ("Submandibular L",),
                                      "Submandibular R": ("Submandibular R",)}, (24, 40, 40), (1.5, 1.5, 2.0),
               stage1_prob=True),
    Stage2Spec("spinal_canal_prob", {"Spinal canal": ("Spinal canal",)}, (56, 32, 32), (1.5, 1.5, 4.0),
               within_crop=True, stage1_prob=True),
    Stage2Spec("spinal_cord_prob", {"Spinal cord": ("Spinal cord",)}, (56, 32, 32), (1.5, 1.5, 4.0),
               within_crop=True, stage1_prob=True),
    # The brainstem is painted 2 HU under the brain: the CT-only model lost its top on one held-out phantom (0727b,
    # Dice 0.541); with stage 1's probability (24 epochs) 0.800 there, 0.815 -> 0.863 over the 7.
    Stage2Spec("brainstem_prob", {"Brainstem": ("Brainstem",)}, (32, 32, 32), (2.0, 2.0, 2.5), stage1_prob=True),
)
# Shipped in oar-unet-phantom 0.3.0; the submandibular model lowered those glands' Dice (docs/oar.md).
DEFAULT_MODELS = ("lens", "optic_nerve", "cochlea", "lacrimal")


def is_right(organ: str) -> bool:
    return any(s.name == organ and s.modifier is not None and s.modifier[1] == RIGHT[1] for s in HN_ORGANS)


@dataclass
class AnchorCase:
    name: str
    ct: Volume  # int16 HU, the case's native grid cropped to the region of interest
    labels: Volume  # uint8 on the same grid
    reference: dict[str, np.ndarray] = field(default_factory=dict)  # organ -> centroid (LPS mm) of the labels
    predicted: dict[str, np.ndarray] = field(default_factory=dict)  # organ -> centroid stage 1 found
    probabilities: dict[str, Volume] = field(default_factory=dict)  # organ -> stage 1's probability (its grid)


def _spec_organs(specs: Sequence[Stage2Spec]) -> set[str]:
    return {n for spec in specs for organ, anchors in spec.anchors.items() for n in (organ, *anchors)}


def prepare(case: OarCase, specs: Sequence[Stage2Spec], stage1_model: str | None) -> AnchorCase | None:
    """One case cut to the box around its anchor and target organs (+ a margin), with both centroid sets."""
    names = _spec_organs(specs)
    values = [LABEL_OF[n] for n in names]
    box = bounding_box(np.isin(case.labels.array, values),
                       [int(np.ceil(ROI_MARGIN_MM / s)) for s in case.ct.spacing[::-1]])
    if box is None:
        return None
    ct = crop(case.ct, box)
    predicted: dict[str, np.ndarray] = {}
    probabilities: dict[str, Volume] = {}
    if stage1_model is not None:
        from ..tasks.oar.model import predict_organs

        targets = {organ for spec in specs for organ in spec.anchors}
        stage1 = predict_organs(case.ct, stage1_model, use_stage2=False, probabilities=targets)
        predicted = organ_centroids(stage1.labels, LABEL_OF, names)
        for organ, prob in stage1.probabilities.items():  # kept on stage 1's grid, cut to the case's box
            inner = covering_box(prob, ct, tuple(slice(0, n) for n in ct.shape), pad=2)
            if inner is not None:
                probabilities[organ] = crop(prob, inner)
    return AnchorCase(case.name, ct, crop(case.labels, box), organ_centroids(case.labels, LABEL_OF, names),
                      predicted, probabilities)


def save_case(case: AnchorCase, path: Path) -> None:
    geometry = {"spacing": case.ct.spacing, "origin": case.ct.origin, "direction": case.ct.direction.tolist()}
    np.savez_compressed(path, ct=case.ct.array, labels=case.labels.array, geometry=json.dumps(geometry),
                        reference=json.dumps({k: v.tolist() for k, v in case.reference.items()}),
                        predicted=json.dumps({k: v.tolist() for k, v in case.predicted.items()}),
                        **{f"prob/{k}": v.array for k, v in case.probabilities.items()},
                        prob_geometry=json.dumps({k: {"spacing": v.spacing, "origin": v.origin,
                                                      "direction": v.direction.tolist()}
                                                  for k, v in case.probabilities.items()}))


def load_case(path: Path) -> AnchorCase:
    data = np.load(path)
    geo = json.loads(str(data["geometry"]))
    ct = Volume(data["ct"], tuple(geo["spacing"]), tuple(geo["origin"]), np.array(geo["direction"]), "ct")
    cents = {k: {n: np.array(v) for n, v in json.loads(str(data[k])).items()} for k in ("reference", "predicted")}
    probs = json.loads(str(data["prob_geometry"])) if "prob_geometry" in data else {}  # caches before stage1_prob
    probabilities = {k: Volume(data[f"prob/{k}"], tuple(g["spacing"]), tuple(g["origin"]), np.array(g["direction"]),
                               "stage1_prob") for k, g in probs.items()}
    return AnchorCase(path.stem, ct, ct.with_array(data["labels"]), cents["reference"], cents["predicted"],
                      probabilities)


def learn_rules(cases: Sequence[AnchorCase], spec: Stage2Spec) -> tuple[dict[str, AnchorRule], list[float]]:
    """Each organ's rule (mean reference offset from its anchors, the sides pooled in the left frame) and the
    spread (SD, mm, x y z) of that offset over the cases: what the crop must absorb beyond stage 1's error."""
    flip = np.array([-1.0, 1.0, 1.0])
    vectors = []
    for case in cases:
        for organ, anchors in spec.anchors.items():
            centre = anchor_point(AnchorRule(anchors, (0.0, 0.0, 0.0)), case.reference)
            if organ in case.reference and centre is not None:
                d = case.reference[organ] - centre
                vectors.append(d * flip if is_right(organ) else d)
    if not vectors:
        raise ValueError(f"no training case holds the organs and anchors of stage-2 model {spec.key!r}")
    mean = np.mean(vectors, axis=0)
    sides = len(spec.anchors) > 1
    rules = {organ: AnchorRule(anchors, tuple(mean * flip if is_right(organ) else mean),  # type: ignore[arg-type]
                               mirror=sides and is_right(organ)) for organ, anchors in spec.anchors.items()}
    return rules, [round(float(v), 2) for v in np.std(vectors, axis=0)]


def anchored_crops(case: AnchorCase, rules: Mapping[str, AnchorRule], spacing: Sequence[float],
                   patch: Sequence[int], jitter_mm: float,
                   inputs: Sequence[str] = ("ct",)) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input channels (C, D, H, W), binary mask) crops of ``patch`` plus a ``jitter_mm`` margin, placed by each
    organ's rule from the reference centroids and from stage 1's; the channels are those inference gives the model
    (``inputs``: the windowed CT, and stage 1's probability of the organ with ``stage1_prob``)."""
    if STAGE1_PROB in inputs:
        lacking = [organ for organ in rules if organ in case.reference and organ not in case.probabilities]
        if lacking:
            raise InputError("--cache", f"case {case.name} holds no stage-1 probability of {', '.join(lacking)}: "
                                        "prepare a new cache (--stage1-model, these --models)")
    reach = np.ceil(jitter_mm / np.asarray(spacing, float)[::-1]).astype(int)
    big = tuple(int(p) for p in np.asarray(patch) + 2 * reach)
    out = []
    for organ, rule in rules.items():
        if organ not in case.reference:
            continue
        mask = case.labels.with_array((case.labels.array == LABEL_OF[organ]).astype(np.uint8))
        for centroids in (case.reference, case.predicted):
            centre = anchor_point(rule, centroids)
            if centre is None:
                continue
            grid = crop_grid(case.ct, centre, spacing, big, rule.mirror)
            image = stage2_input(case.ct, grid, {"inputs": list(inputs)}, HU_WINDOW, case.probabilities.get(organ))
            out.append((image, resample_to(mask, grid, order=0).array.astype(np.uint8)))
    return out


def train_models(crops: Mapping[str, list[tuple[np.ndarray, np.ndarray]]], specs: Sequence[Stage2Spec],
                 config: OarTrainConfig, out: Path, epochs: int, lr: float, dice_weight: float,
                 max_minutes: float | None, log: Callable[[str], None] = print) -> dict[str, dict]:
    """One binary ``OARUNet`` per spec; returns key -> {"model", "summary", "minutes"}."""
    result = {}
    for spec in specs:
        if not crops.get(spec.key):
            continue
        torch.manual_seed(config.seed)
        model = OARUNet(in_channels=len(spec.inputs), out_channels=2, width=config.stage2_width, norm=config.norm,
                        dropout=0.0)
        task = Stage2Task(spec.key, crops[spec.key], config, patch=spec.patch, dice_weight=dice_weight)
        loop = LoopConfig(out / "stage2" / spec.key, epochs, lr=lr, milestones=(0.8,), seed=config.seed,
                          amp=False, max_minutes=max_minutes, log=log)
        started = time.perf_counter()
        summary = train(model, task, loop)
        result[spec.key] = {"model": model.eval(), "summary": summary,
                            "minutes": round((time.perf_counter() - started) / 60, 1)}
    return result


def stage2_ops(specs: Sequence[Stage2Spec], rules: Mapping[str, Mapping[str, AnchorRule]]) -> list[dict]:
    """The card's ``stage2`` ops: one per organ, its model key, crop and anchor rule."""
    ops = []
    for spec in specs:
        for organ, rule in rules.get(spec.key, {}).items():
            ops.append({"op": "stage2", "organ": organ, "key": spec.key, "label": LABEL_OF[organ],
                        "spacing": [float(v) for v in spec.spacing], "patch": list(spec.patch),
                        "anchor": rule.to_dict(), **({"replace": "crop"} if spec.within_crop else {}),
                        **({"inputs": list(spec.inputs)} if spec.stage1_prob else {}),
                        **({"refill": CONTAINED_IN[organ]} if spec.stage1_prob and organ in CONTAINED_IN else {})})
    return ops


def stage2_model_kwargs(ops: Sequence[Mapping], common: Mapping) -> dict[str, dict]:
    """Each stage-2 key's ``OARUNet`` arguments: ``common`` plus one input channel per entry of its ops' ``inputs``
    (absent: the CT only, as in the cards before ``stage1_prob``)."""
    out = {}
    for op in ops:
        channels = len(op.get("inputs", ("ct",)))
        out[op["key"]] = {**common, **({"in_channels": channels} if channels > 1 else {})}
    return out


def build_cascade(stage1_state: Mapping[str, torch.Tensor], stage1_kwargs: dict, models: Mapping[str, OARUNet],
                  stage2_kwargs: Mapping[str, dict]) -> OARCascade:
    """A cascade of the given stage-1 weights and the stage-2 models (``stage2_kwargs``: per model key)."""
    cascade = OARCascade(stage1_kwargs, {key: dict(stage2_kwargs[key]) for key in models})
    cascade.stage1.load_state_dict({k[len("stage1."):]: v for k, v in stage1_state.items() if k.startswith("stage1.")})
    for key, model in models.items():
        cascade.stage2[key].load_state_dict(model.state_dict())
    return cascade


def main(argv: Sequence[str] | None = None) -> int:
    from ..cli.train_oar import add_stage2_arguments

    p = argparse.ArgumentParser(prog="python -m clinseg.train.oar_stage2", description=__doc__.splitlines()[0])
    add_stage2_arguments(p)
    args = p.parse_args(argv)
    return run(args, "python -m clinseg.train.oar_stage2 " + " ".join(argv or sys.argv[1:]))


def run(args: argparse.Namespace, command: str) -> int:
    """Prepare (or reuse) the cases, learn the anchor rules, train the models, write the cascade and stage2.json."""
    from safetensors.torch import load_file

    from ..registry import get_registry
    from .oar_data import iter_cases

    torch.set_num_threads(max(1, args.threads))
    known = {s.key: s for s in DEFAULT_SPECS}
    keys = args.models.split(",") if args.models else list(DEFAULT_MODELS)
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise InputError("--models", f"unknown stage-2 model {', '.join(unknown)} (have {', '.join(known)})")
    specs = [known[k] for k in keys]
    cache = args.cache or args.out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    names = sorted(p.name for p in cache.glob("*.npz"))
    if not names:
        for i, case in enumerate(iter_cases(args.data, splits=tuple(args.splits.split(",")))):
            prepared = prepare(case, specs, args.stage1_model)
            if prepared is not None:
                save_case(prepared, cache / f"{i:03d}_{case.name}.npz")
                print(f"prepared {case.name} ({time.perf_counter() - started:.0f} s)", flush=True)
        names = sorted(p.name for p in cache.glob("*.npz"))
    prepare_minutes = (time.perf_counter() - started) / 60
    if args.prepare_only:
        return 0
    cases = [load_case(cache / n) for n in names]
    for case in cases:  # organs added to the specs after the cache was built: their centroids from its labels
        missing = _spec_organs(specs) - set(case.reference)
        case.reference.update(organ_centroids(case.labels, LABEL_OF, missing))
    config = OarTrainConfig(batch=args.batch, iters_per_epoch=args.iters_per_epoch, norm="batch",
                            stage2_jitter_mm=args.jitter_mm)
    rules, spread, crops = {}, {}, {}
    for spec in specs:
        rules[spec.key], spread[spec.key] = learn_rules(cases, spec)
        crops[spec.key] = [c for case in cases for c in anchored_crops(case, rules[spec.key], spec.spacing,
                                                                         spec.patch, args.jitter_mm, spec.inputs)]
        print(f"{spec.key}: {len(crops[spec.key])} crops, offset SD {spread[spec.key]} mm", flush=True)
    trained = train_models(crops, specs, config, args.out, args.epochs, args.lr, args.dice_weight, args.max_minutes)
    registry = get_registry()
    card = registry.card(args.stage1_model)
    weights = args.stage1_weights or registry.model_dir(args.stage1_model) / card.files[0].name
    stage1_kwargs = card.architecture[1]["stage1"]
    stage2_kwargs = {"width": config.stage2_width, "dropout": 0.0, "norm": config.norm}
    ops = stage2_ops(specs, rules)
    cascade = build_cascade(load_file(str(weights)), stage1_kwargs, {k: v["model"] for k, v in trained.items()},
                            stage2_model_kwargs(ops, stage2_kwargs))
    export_safetensors(cascade, args.out / "model.safetensors", {"network": "OARCascade"})
    record = {
        "command": command,
        "stage1_weights": str(weights), "stage2_kwargs": stage2_kwargs, "prepare_minutes": round(prepare_minutes, 1),
        "ops": ops, "offset_sd_mm": spread,
        "models": {k: {"crops": len(crops[k]), "epochs": v["summary"].epochs_done,
                       "steps": sum(int(r["iterations"]) for r in v["summary"].rows), "batch": args.batch,
                       "minutes": v["minutes"], "curves": v["summary"].rows} for k, v in trained.items()},
        "settings": {"spacing": {s.key: list(s.spacing) for s in specs}, "jitter_mm": args.jitter_mm, "lr": args.lr,
                     "dice_weight": args.dice_weight, "width": config.stage2_width, "norm": config.norm,
                     "threads": args.threads, "train_cases": [c.name for c in cases]},
    }
    (args.out / "stage2.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
