"""The organs OARSeg outputs: segments (names, RT colours, SNOMED CT codes), clean-up and the volume table.

The organ list and codes live in ``clinseg.terminology.HN_ORGANS`` (label values shared with the phantoms and the
models); a model card may carry a subset, and its labels are what a run writes. ``CONTAINS`` says which organs
enclose others by the clinical definitions the real masks follow (``bench/hn_containment.py``: in all 46 mask sets,
23 scans x 2 annotators, the orbit holds 100 % of the lens and the canal 99.6-100 % of the cord; no other pair
shares over 5 %): the networks give one label per voxel, and the outputs give a container its full extent
(``clinseg.containment``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ...containment import segment_mask
from ...result import Table
from ...terminology import HN_ORGANS, Segment
from ...volume import Volume

STAGE2_DEFAULT = ("Optic nerve L", "Optic nerve R", "Optic chiasm", "Lens L", "Lens R", "Cochlea L", "Cochlea R",
                  "Lacrimal L", "Lacrimal R")
# Container -> organs inside it (names of HN_ORGANS).
CONTAINS: dict[str, tuple[str, ...]] = {"Spinal canal": ("Spinal cord",), "Eye L": ("Lens L",), "Eye R": ("Lens R",)}


def with_containment(segments: Sequence[Segment]) -> list[Segment]:
    """``segments`` with ``contains`` set from ``CONTAINS`` (a card's labels do not carry it)."""
    return [replace(s, contains=CONTAINS.get(s.name, s.contains)) for s in segments]


def keep_one_component(labels: np.ndarray) -> np.ndarray:
    """Each organ label reduced to its largest 26-connected component (stray islands are false positives)."""
    import cc3d

    components = cc3d.connected_components(labels, connectivity=26)  # multi-label: never joins two organs
    flat = components.ravel()
    counts = np.bincount(flat)
    label_of = np.zeros(len(counts), labels.dtype)
    label_of[flat] = labels.ravel()
    keep = np.zeros(len(counts), bool)
    for value in np.unique(label_of[1:]):
        ids = np.flatnonzero(label_of == value)
        ids = ids[ids > 0]
        if value and len(ids):
            keep[ids[np.argmax(counts[ids])]] = True
    return np.where(keep[components], labels, 0).astype(labels.dtype)


def segments_of(model_id: str | None, labels: np.ndarray) -> list[Segment]:
    """The segments of the label values present, from the model's card (default: the shared organ table)."""
    table = list(HN_ORGANS)
    if model_id is not None:
        from ...registry import get_registry

        table = get_registry().card(model_id).segments() or table
    present = set(np.unique(labels).tolist())
    return with_containment([s for s in table if s.label in present])


def organ_table(labelmap: Volume, segments: list[Segment]) -> Table:
    """One row per segment: name, label, volume (ml), voxels, centroid (LPS mm), SNOMED code; a container's row
    counts the organs inside it (the canal's volume includes the cord's)."""
    voxel_ml = float(np.prod(labelmap.spacing)) / 1000.0
    cols: dict[str, list] = {k: [] for k in ("organ", "label", "volume_ml", "voxels", "centroid_lps", "code")}
    for s in segments:
        mask = segment_mask(labelmap.array, s, segments)
        n = int(np.count_nonzero(mask))
        centroid = ""
        if n:
            ijk = np.argwhere(mask).mean(0)[::-1]
            centroid = ",".join(f"{v:.1f}" for v in labelmap.index_to_physical(ijk))
        cols["organ"].append(s.name)
        cols["label"].append(s.label)
        cols["volume_ml"].append(round(n * voxel_ml, 3))
        cols["voxels"].append(n)
        cols["centroid_lps"].append(centroid)
        cols["code"].append(f"{s.type[0]}:{s.type[1]}")
    return Table("organs", cols)


def score_organs(pred: Volume, pred_segments: Sequence[Segment], ref: Volume,
                 ref_segments: Sequence[Segment] = HN_ORGANS, tolerance_mm: float = 2.0) -> Table:
    """Per-organ Dice / HD95 / surface Dice of ``pred`` against ``ref`` (``clinseg.metrics.organs``), matched by
    name, every container at its full extent on both sides (the canal with the cord inside it, as drawn clinically)."""
    from ...containment import SegmentMasks
    from ...metrics.organs import organ_table as qa_table

    return qa_table(SegmentMasks(pred.array, with_containment(pred_segments)),
                    SegmentMasks(ref.array, with_containment(ref_segments)), ref.spacing, tolerance_mm=tolerance_mm)
