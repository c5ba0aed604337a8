"""Which input volume is which MRI sequence, and whether the inputs are brain MRI at all.

Order of evidence: the user's explicit list (``--sequences dwi,adc``), else each input's own description (a
BIDS JSON sidecar's ImageType / b-value / protocol, a DICOM SeriesDescription kept as the volume's name, the
file name). A sequence that cannot be told raises one InputError asking for ``--sequences``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...volume import Volume

MODES = ("auto", "acute", "chronic")
PRIMARY = {"acute": "dwi", "chronic": "t1"}  # the sequence a mode segments on (its grid is the result's)

SEQUENCES = ("dwi", "adc", "flair", "t1")
# Tried in this order: an ADC map is usually named after its diffusion series ("ep2d_diff_ADC").
_WORDS = (
    ("adc", r"adc|apparent[ _-]?diffusion"),
    ("flair", r"flair|tirm|dark[ _-]?fluid"),
    ("dwi", r"dwi|diff|diffusion|trace|b[ _-]?1000|b[ _-]?800|tracew"),
    ("t1", r"t1|t1w|mprage|spgr|bravo|tfe"),
)


@dataclass
class SequenceInput:
    """One input volume and the texts that may tell its sequence (file name, series description, sidecar)."""

    volume: Volume
    label: str  # for messages: the file name
    hints: tuple[str, ...] = ()


def sequence_from_text(text: str) -> str | None:
    """The sequence a name or description points to, matching whole words only ("t1" not inside "st1")."""
    lowered = text.lower()
    for sequence, words in _WORDS:
        if re.search(rf"(?<![a-z0-9])(?:{words})(?![a-z])", lowered):
            return sequence
    return None


def sidecar_hints(path: str | Path) -> tuple[str, ...]:
    """Descriptive fields of the BIDS JSON sidecar next to an image (``x.nii.gz`` -> ``x.json``), if any."""
    path = Path(path)
    stem = re.sub(r"\.(nii(\.gz)?|nrrd|nhdr|mha|mhd)$", "", path.name, flags=re.IGNORECASE)
    sidecar = path.with_name(stem + ".json")
    if not sidecar.is_file():
        return ()
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    if not isinstance(meta, dict):
        return ()
    hints = [str(meta.get(k, "")) for k in ("SeriesDescription", "ProtocolName", "SequenceName")]
    image_type = meta.get("ImageType") or []
    if any(str(t).upper() == "ADC" for t in image_type):
        hints.insert(0, "ADC")
    elif _number(meta.get("DiffusionBValue")) > 0:
        hints.insert(0, "DWI")
    elif str(meta.get("ScanningSequence", "")).upper() == "IR" and _number(meta.get("EchoTime")) > 60:
        hints.insert(0, "FLAIR")  # a long-TE inversion recovery: fluid-attenuated T2
    return tuple(h for h in hints if h)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def parse_sequence_list(text: str | None, count: int) -> list[str] | None:
    """``"dwi,adc"`` -> ``["dwi", "adc"]``, checked against the number of inputs; None when not given."""
    if text is None:
        return None
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SEQUENCES]
    if bad or not names:
        raise InputError("--sequences", f"unknown sequence(s) {bad or text!r} (use {', '.join(SEQUENCES)})")
    if len(set(names)) != len(names):
        raise InputError("--sequences", f"each sequence may be named once, got {text}")
    if len(names) != count:
        raise InputError("--sequences", f"names {len(names)} sequence(s) for {count} input volume(s)")
    return names


def assign_sequences(inputs: list[SequenceInput], explicit: list[str] | None = None) -> dict[str, Volume]:
    """Volumes by sequence name (``dwi``, ``adc``, ``flair``, ``t1``)."""
    if not inputs:
        raise InputError("inputs", "no input volume given (a DWI, with its ADC, or a T1)")
    if explicit is not None:
        if len(explicit) != len(inputs):
            raise InputError("--sequences", f"names {len(explicit)} sequence(s) for {len(inputs)} input volume(s)")
        return {name: item.volume for name, item in zip(explicit, inputs)}
    found: dict[str, Volume] = {}
    for item in inputs:
        guesses = [sequence_from_text(h) for h in (*item.hints, item.volume.name, item.label)]
        sequence = next((g for g in guesses if g), None)
        if sequence is None:
            raise InputError(item.label, "cannot tell which sequence this is (name the inputs in order with "
                             "--sequences, e.g. --sequences dwi,adc,flair)")
        if sequence in found:
            raise InputError(item.label, f"looks like a second {sequence.upper()} (name the inputs in order "
                             "with --sequences)")
        found[sequence] = item.volume
    return found


def require_mri(volume: Volume, subject: str) -> None:
    """Refuse a CT: Hounsfield units put air near -1000, and MRI magnitudes are never strongly negative."""
    sample = volume.array[:: max(1, volume.shape[0] // 32), ::2, ::2].astype(np.float32)
    low, high = np.percentile(sample, [1, 99])
    if low < -500 or (np.mean(sample < -500) > 0.05):
        raise InputError(subject, f"looks like a CT in Hounsfield units (1st/99th percentiles {low:.0f}/{high:.0f}"
                         "); StrokeSeg needs brain MRI (DWI with ADC, or T1)")
    if not np.isfinite(sample).all():
        raise InputError(subject, "contains NaN or infinite values")


def require_brain(brain_ml: float, extent_mm: tuple[float, float, float], subject: str) -> None:
    """Refuse an MRI whose extracted 'brain' is not brain-sized (another body part, or a tiny slab)."""
    if brain_ml < MIN_BRAIN_ML or brain_ml > MAX_BRAIN_ML:
        raise InputError(subject, f"does not look like a brain MRI (the brain-like region is {brain_ml:.0f} ml, "
                         f"expected {MIN_BRAIN_ML:.0f}-{MAX_BRAIN_ML:.0f} ml)")
    lr, ap = extent_mm[0], extent_mm[1]
    if not (BRAIN_WIDTH_MM[0] <= lr <= BRAIN_WIDTH_MM[1] and BRAIN_WIDTH_MM[0] <= ap <= BRAIN_LENGTH_MAX_MM):
        raise InputError(subject, f"does not look like a brain MRI (brain-like region {lr:.0f} x {ap:.0f} mm "
                         "left-right x front-back)")


MIN_BRAIN_ML = 150.0  # a slab of a few thick slices through the basal ganglia still exceeds this
MAX_BRAIN_ML = 2200.0
BRAIN_WIDTH_MM = (90.0, 190.0)
BRAIN_LENGTH_MAX_MM = 230.0
