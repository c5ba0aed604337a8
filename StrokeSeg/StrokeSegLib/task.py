"""StrokeSeg's task as data: one case is several MRI sequences, named for ``clinseg stroke``.

The primary volume depends on the mode (DWI for an acute infarct, T1 for a chronic one); ADC and FLAIR are
optional companions. The child receives the volumes in order plus ``--sequences`` naming each, so it never has
to guess which file is which. Results: one lesion segment, a "lesions" table (one row per lesion) and the
summary metrics. Pure Python apart from the layout types (no ``slicer`` import here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ClinicalSegLib.mrml_result import NodeRole, ResultLayout
from ClinicalSegLib.task import TaskSpec

from clinseg.errors import InputError
from clinseg.tasks.stroke.sequences import MODES as CLI_MODES
from clinseg.tasks.stroke.sequences import PRIMARY, parse_sequence_list, sequence_from_text

MODES = ("acute", "chronic")  # the selector's stages; the CLI also has "auto", the module always states one
LESION_TABLE = "lesions"

LAYOUT = ResultLayout("Stroke results", "ClinicalSeg.StrokeSeg.", (
    NodeRole("lesionTable", "table", lambda table: table.name == LESION_TABLE),
    NodeRole("tables", "tables"),
), segmentation_suffix="lesions")


def guess_sequences(names: Sequence[str]) -> dict[str, int]:
    """Index of the first volume named like each sequence: ``["T1", "DWI", "ADC"]`` -> {t1: 0, dwi: 1, adc: 2}.

    The words are the core's (the CLI tells unnamed inputs the same way).
    """
    found: dict[str, int] = {}
    for index, name in enumerate(names):
        sequence = sequence_from_text(name)
        if sequence is not None:
            found.setdefault(sequence, index)
    return found


def case_inputs(mode: str, primary: Any, adc: Any = None, flair: Any = None) -> tuple[list, dict[str, Any]]:
    """The volumes of one case in order, and the task options naming them: primary first, then ADC and FLAIR.

    ``primary`` stays in the list even when missing (``None``), so the widget sees an incomplete case.
    ``mode`` is "acute" or "chronic" (any case: the selector shows "Acute").
    """
    mode = str(mode).lower()
    if mode not in MODES:
        raise InputError("mode", f"unknown mode '{mode}' (use {' or '.join(MODES)})")
    volumes, names = [primary], [PRIMARY[mode]]
    for volume, name in ((adc, "adc"), (flair, "flair")):
        if volume is not None:
            volumes.append(volume)
            names.append(name)
    return volumes, {"sequences": names, "mode": mode}


def stroke_options(options: dict[str, Any]) -> list[str]:
    """``sequences`` (names in input order) -> ``--sequences dwi,adc``; ``mode`` -> ``--mode``; checked here."""
    unknown = set(options) - {"sequences", "mode"}
    if unknown:
        raise InputError("options", f"stroke segmentation takes no option {', '.join(sorted(unknown))}")
    args: list[str] = []
    sequences = options.get("sequences")
    if sequences is not None:
        text = sequences if isinstance(sequences, str) else ",".join(sequences)
        names = parse_sequence_list(text, len(text.split(",")))
        args += ["--sequences", ",".join(names)]
    mode = options.get("mode")
    if mode is not None:
        if mode not in CLI_MODES:
            raise InputError("mode", f"unknown mode '{mode}' (use {', '.join(CLI_MODES)})")
        args += ["--mode", mode]
    return args


def lesion_summary(metrics: dict[str, Any]) -> str:
    """The status line's sentence from the run's summary metrics; empty when the run did not report them."""
    volume = metrics.get("lesion_volume_ml")
    count = metrics.get("lesion_count")
    if volume is None or count is None:
        return ""
    return f"Lesion volume {float(volume):.1f} ml in {int(count)} lesion(s)."


def default_model() -> str | None:
    from clinseg.tasks.stroke.pipeline import DEFAULT_MODEL

    return DEFAULT_MODEL["acute"]  # the selector's default stage


STROKE = TaskSpec(
    name="stroke",
    title="Stroke lesion segmentation",
    engines=("auto", "model", "classical"),
    classical_summary="Classical engine: bright-DWI, low-ADC voxels asymmetric to the other hemisphere (acute) or "
                      "CSF-dark tissue loss on T1 (chronic), relative to the patient's own brain; no weights, "
                      "no training data.",
    default_model=default_model,
    arguments=stroke_options,
    layout=LAYOUT,
)
