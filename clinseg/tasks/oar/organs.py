"""The organs OARSeg outputs: segments (names, RT colours, SNOMED CT codes), clean-up and the volume table.

The organ list and codes live in ``clinseg.terminology.HN_ORGANS`` (label values shared with the phantoms and the
models); a model card may carry a subset, and its labels are what a run writes.
"""

from __future__ import annotations

import numpy as np

from ...result import Table
from ...terminology import HN_ORGANS, Segment
from ...volume import Volume

STAGE2_DEFAULT = ("Optic nerve L", "Optic nerve R", "Optic chiasm", "Lens L", "Lens R", "Cochlea L", "Cochlea R",
                  "Lacrimal L", "Lacrimal R")


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
    return [s for s in table if s.label in present]


def organ_table(labelmap: Volume, segments: list[Segment]) -> Table:
    """One row per segment: name, label, volume (ml), voxels, centroid (LPS mm), SNOMED code."""
    voxel_ml = float(np.prod(labelmap.spacing)) / 1000.0
    counts = np.bincount(labelmap.array.ravel(), minlength=max([s.label for s in segments], default=0) + 1)
    cols: dict[str, list] = {k: [] for k in ("organ", "label", "volume_ml", "voxels", "centroid_lps", "code")}
    for s in segments:
        n = int(counts[s.label])
        centroid = ""
        if n:
            ijk = np.argwhere(labelmap.array == s.label).mean(0)[::-1]
            centroid = ",".join(f"{v:.1f}" for v in labelmap.index_to_physical(ijk))
        cols["organ"].append(s.name)
        cols["label"].append(s.label)
        cols["volume_ml"].append(round(n * voxel_ml, 3))
        cols["voxels"].append(n)
        cols["centroid_lps"].append(centroid)
        cols["code"].append(f"{s.type[0]}:{s.type[1]}")
    return Table("organs", cols)
