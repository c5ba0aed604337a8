"""The StrokeSeg pipeline: brain MRI sequences -> infarct mask, per-lesion table and volumes, as one Result.

Modes: ``acute`` (DWI, with ADC and optionally FLAIR; the lesion lives on the DWI's grid), ``chronic`` (T1,
as the document's ATLAS setting; the T1's grid), ``auto`` (acute when a DWI is given, else chronic).
Steps: check every input is MRI, extract the brain from the primary sequence and check it is a brain, bring the
companions onto the primary grid (or refuse), segment (classical engine or a registered network), then
label the lesions and measure them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError
from ...progress import CancelToken, ProgressCallback, Stages
from ...result import Result
from ...terminology import INFARCT
from ...volume import Volume
from ..engines import resolve_engine as resolve_task_engine
from .align import adc_on_dwi_grid, flair_on_dwi_grid
from .brain import brain_mask
from .classical import acute_lesion, adc_to_micro, chronic_lesion
from .lesions import lesion_table
from .model import lesion_probability
from .sequences import MODES, PRIMARY, SEQUENCES, require_brain, require_mri

# The model ``auto`` runs when installed; None: the classical engine (no model beats it on held-out
# phantoms yet, see bench/stroke.py).
DEFAULT_MODEL: dict[str, str | None] = {"acute": None, "chronic": None}


@dataclass
class StrokeOptions:
    mode: str = "auto"  # "auto", "acute" or "chronic"
    engine: str = "auto"  # "model", "classical", or "auto" (a default model when installed, else classical)
    model_id: str | None = None
    device: str = "auto"


def resolve_mode(mode: str, volumes: dict[str, Volume]) -> str:
    if mode not in MODES:
        raise InputError("mode", f"unknown mode '{mode}' (use {', '.join(MODES)})")
    if mode == "auto":
        mode = "acute" if "dwi" in volumes else "chronic"
    primary = PRIMARY[mode]
    if primary not in volumes:
        given = ", ".join(sorted(volumes)) or "none"
        raise InputError("inputs", f"{mode} mode needs a {primary.upper()} volume (given: {given})")
    return mode


def resolve_engine(options: StrokeOptions, mode: str) -> tuple[str, str | None]:
    """The shared engine rule, plus: the model must read the mode's primary sequence."""
    engine, model_id = resolve_task_engine("stroke", options.engine, options.model_id, DEFAULT_MODEL[mode])
    if engine == "model":
        from ...registry import get_registry

        modalities = get_registry().card(model_id).inputs["modalities"]
        wanted = PRIMARY[mode].upper()
        if wanted not in [m.upper() for m in modalities]:
            raise InputError(model_id, f"reads {', '.join(modalities)}, not the {mode} mode's {wanted}")
    return engine, model_id


def _extent_mm(volume: Volume, mask: np.ndarray) -> tuple[float, float, float]:
    points = np.argwhere(mask[::2, ::2, ::2])[:, ::-1] * 2.0
    if points.size == 0:
        return 0.0, 0.0, 0.0
    lps = volume.index_to_physical(points)
    return tuple(float(v) for v in np.ptp(lps, axis=0))  # type: ignore[return-value]


def run_stroke(
    volumes: dict[str, Volume],
    options: StrokeOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Result:
    """Lesion segmentation of one case; ``volumes`` maps sequence names (dwi, adc, flair, t1) to volumes."""
    options = options or StrokeOptions()
    stages = Stages("stroke", progress, cancel)
    stages.begin("checks")
    unknown = [name for name in volumes if name not in SEQUENCES]
    if unknown:
        raise InputError("inputs", f"unknown sequence(s) {', '.join(unknown)} (use {', '.join(SEQUENCES)})")
    mode = resolve_mode(options.mode, volumes)
    for name, volume in volumes.items():
        require_mri(volume, volume.name or name.upper())
    engine, model_id = resolve_engine(options, mode)
    primary_name = PRIMARY[mode]
    primary = volumes[primary_name]
    subject = primary.name or primary_name.upper()
    warnings: list[str] = []

    stages.begin("brain")
    brain = brain_mask(primary, "T1" if mode == "chronic" else "DWI")
    brain_ml = float(brain.sum() * np.prod(primary.spacing) / 1000.0)
    require_brain(brain_ml, _extent_mm(primary, brain), subject)

    stages.begin("align")
    report: dict = {}
    adc_micro = None
    if "adc" in volumes:
        adc, info = adc_on_dwi_grid(volumes["adc"], primary)
        report.update(info)
        adc_micro, report["adc_unit"] = adc_to_micro(adc.array, brain, volumes["adc"].name or "ADC")
    elif mode == "acute":
        warnings.append("no ADC given: DWI alone cannot tell restricted diffusion from T2 shine-through")
    if "flair" in volumes:
        _, info = flair_on_dwi_grid(volumes["flair"], primary)  # checked and registered; shown in Slicer
        report.update(info)

    stages.begin("segmentation")
    if engine == "model":
        probability, threshold = lesion_probability(primary, brain, model_id, options.device, progress, cancel)
        mask = probability > threshold
        report["model"] = model_id
    elif mode == "acute":
        mask, details = acute_lesion(primary, adc_micro, brain)
        report.update(details, model=None)
    else:
        mask, details = chronic_lesion(primary, brain)
        report.update(details, model=None)

    stages.begin("lesions")
    labelmap = primary.with_array(mask.astype(np.uint8), name="lesion")
    table, _ = lesion_table(labelmap, adc_micro)
    result = Result("stroke", labelmap=labelmap, segments=[INFARCT], tables=[table])
    voxel_ml = float(np.prod(primary.spacing)) / 1000.0
    result.metrics.update(
        mode=mode,
        engine=engine,
        engine_report=report,
        sequences=sorted(volumes),
        lesion_volume_ml=round(float(mask.sum()) * voxel_ml, 4),
        lesion_count=table.n_rows,
        brain_volume_ml=round(brain_ml, 1),
        warnings=warnings,
    )
    if adc_micro is not None and mask.any():
        result.metrics["lesion_mean_adc_1e-6_mm2_s"] = round(float(adc_micro[mask].mean()), 1)
    result.metrics["timings_s"] = stages.end()
    return result
