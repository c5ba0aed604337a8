"""``clinseg train nodule --network nodulenet``: NoduleNet's cases from any source, the training, the model pack.

Sources are those of the false-positive reducer (``nodule_data``): generated phantom seeds (with their nodule label
maps, so the mask head learns too), phantom folders, LUNA16 and LIDC-IDRI (boxes only: no mask term). Cases are
prepared in ``workers`` processes (a phantom takes a few seconds, a real CT more), then ``nodulenet.train`` runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from .loop import export_safetensors, row_checkpointer
from .nodule_fpr import N_DISTRACTORS, PHANTOM_PRESET
from .nodulenet import NoduleNetConfig, train
from .nodulenet_data import PreparedCase, prepare_case


def phantom_case(seed: int, n_nodules: int) -> PreparedCase:
    """A generated small chest phantom of ``seed`` prepared with its nodule label map."""
    from ..phantoms.chest import generate_chest

    ph = generate_chest(seed, preset=PHANTOM_PRESET, n_nodules=n_nodules, n_distractors=N_DISTRACTORS)
    return prepare_case(f"seed{seed}", ph.ct, [(n.center_lps, n.diameter_mm) for n in ph.nodules],
                        ph.nodule_labels, [n.label for n in ph.nodules], seed)


def _folder_case(args: tuple) -> PreparedCase:
    from .nodule_data import iter_cases

    root, layout, name, consensus = args
    case = next(iter_cases(root, layout, [name], consensus))
    return prepare_case(case.name, case.ct, case.nodules)


def _phantom_job(args: tuple[int, int]) -> PreparedCase:
    return phantom_case(*args)


def prepare_all(jobs: list, fn: Callable, workers: int) -> list[PreparedCase]:
    if workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
        return list(pool.map(fn, jobs))


def run_nodulenet_training(data: str | Path | None, out: str | Path, config: NoduleNetConfig, model_id: str,
                           layout: str = "phantom", seeds: list[int] = (), val_seeds: list[int] = (),
                           val_cases: int = 0, consensus: int = 3, nodules_per_phantom: int = 8, workers: int = 1,
                           device: str = "cpu", init: str | None = None,
                           log: Callable[[str], None] = print) -> dict:
    """Cases -> training -> ``out/model.safetensors`` (checkpointed), ``log.csv``, ``record.json``, the model folder
    ``out/model/`` and the pack ``out/<model_id>.zip``."""
    from .nodule_card import write_pack
    from .nodule_data import case_names
    from .nodulenet_card import nodulenet_card

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        cases = prepare_all([(s, nodules_per_phantom) for s in seeds], _phantom_job, workers)
        val = prepare_all([(s, 8) for s in val_seeds], _phantom_job, workers)
        source = "generated phantom seeds"
    else:
        names = case_names(data, layout)
        cut = len(names) - val_cases
        jobs = [(str(data), layout, n, consensus) for n in names]
        cases, val = prepare_all(jobs[:cut], _folder_case, workers), prepare_all(jobs[cut:], _folder_case, workers)
        source = str(data)
    info = {"layout": layout, "source": source, "train_cases": len(cases), "val_cases": len(val),
            "cases": [c.name for c in cases], "val": [c.name for c in val],
            "nodules": int(sum(len(c.boxes) for c in cases)),
            "with_masks": int(sum(c.labels is not None for c in cases))}
    if data is None:
        info["nodules_per_phantom"] = nodules_per_phantom
    log(f"prepared {len(cases)} training case(s) ({info['nodules']} nodules), {len(val)} validation")
    weights = out / "model.safetensors"
    checkpoint = row_checkpointer(weights, out / "log.csv", "NoduleNet")

    start, provenance = None, None
    if init:
        from .init import initial_weights

        start, provenance = initial_weights(init)
    net, record = train(cases, val, config, torch.device(device), start, log, checkpoint)
    export_safetensors(net, weights, {"network": "NoduleNet", "step": str(record["steps"])})
    record.update(data=info, init=provenance, seed=config.seed, device=device,
                  parameters=sum(p.numel() for p in net.parameters()),
                  validation=record["history"][-1] if record["history"] else None)
    (out / "record.json").write_text(json.dumps(record, indent=1))
    folder, pack = write_pack(nodulenet_card(model_id, weights, layout, record), weights, out)
    return {"weights": str(weights), "model": str(folder), "pack": str(pack), "steps": record["steps"],
            "validation": record["validation"], "cases": len(cases)}
