"""StrokeSeg's task as data: one case is several MRI sequences, named for ``clinseg stroke``.

The primary volume depends on the mode (DWI for an acute infarct, T1 for a chronic one); ADC and FLAIR are
optional companions. The child receives the volumes in order plus ``--sequences`` naming each, so it never has
to guess which file is which. Results: one lesion segment, a "lesions" table (one row per lesion) and the
summary metrics. Pure Python apart from the layout types (no ``slicer`` import here).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ClinicalSegLib.mrml_result import NodeRole, ResultLayout
from ClinicalSegLib.task import TaskSpec

from clinseg.errors import InputError

MODES = ("acute", "chronic")
CLI_MODES = ("auto", *MODES)  # the CLI also decides by itself; the module always states the mode
PRIMARY = {"acute": "dwi", "chronic": "t1"}
SEQUENCES = ("dwi", "adc", "flair", "t1")
LESION_TABLE = "lesions"

LAYOUT = ResultLayout("Stroke results", "ClinicalSeg.StrokeSeg.", (
    NodeRole("lesionTable", "table", lambda table: table.name == LESION_TABLE),
    NodeRole("tables", "tables"),
), segmentation_suffix="lesions")

# Words in a volume's name that tell its sequence. ADC is tried first: scanners name the ADC map after the
# diffusion series it was computed from ("ep2d_diff_ADC"), so "diff" alone must not make it a DWI.
_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    ("adc", r"adc|apparent.?diffusion"),
    ("flair", r"flair|tirm"),
    ("dwi", r"dwi|diff(?:usion)?|trace|b.?1000"),
    ("t1", r"t1w?|mprage|spgr|bravo"),
)


def sequence_of_name(name: str) -> str | None:
    """The sequence a volume's name suggests ("DWI b1000" -> "dwi", "ep2d_diff_ADC" -> "adc"), or None."""
    text = name.lower()
    for sequence, pattern in _NAME_PATTERNS:
        # Only whole tokens: "t1" must not match inside "st1x", "adc" not inside "cadcam".
        if re.search(rf"(?<![a-z0-9])(?:{pattern})(?![a-z])", text):
            return sequence
    return None


def guess_sequences(names: Sequence[str]) -> dict[str, int]:
    """Index of the first volume named like each sequence: ``["T1", "DWI", "ADC"]`` -> {t1: 0, dwi: 1, adc: 2}."""
    found: dict[str, int] = {}
    for index, name in enumerate(names):
        sequence = sequence_of_name(name)
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
        names = [s.strip().lower() for s in (sequences.split(",") if isinstance(sequences, str) else sequences)]
        bad = [s for s in names if s not in SEQUENCES]
        if bad or not names:
            raise InputError("sequences", f"unknown sequence(s) {bad or names} (use {', '.join(SEQUENCES)})")
        if len(set(names)) != len(names):
            raise InputError("sequences", f"each sequence may be given once, got {','.join(names)}")
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


STROKE = TaskSpec(
    name="stroke",
    title="Stroke lesion segmentation",
    engines=("auto", "model", "classical"),
    classical_summary="Classical engine: brain mask, then low-ADC / bright-DWI voxels (acute) or CSF-like "
                      "tissue loss (chronic) grown into lesions; no weights, no training data.",
    arguments=stroke_options,
    layout=LAYOUT,
    available=False,  # until `clinseg stroke` ships: Apply stays disabled and the logic says so plainly
)
