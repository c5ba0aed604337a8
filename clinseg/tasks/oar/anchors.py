"""Where a stage-2 crop goes: an anchor rule of the model card applied to organs that stage 1 finds reliably.

A small organ (lens, optic nerve, cochlea) is often missed by stage 1 at its coarse spacing, so its crop is not
centred on stage 1's guess of that organ but on the mean centroid of *anchor* organs (an eye, the brainstem)
moved by a fixed offset learned from training masks. Training crops are placed by the same rule, from the
reference anchors and from stage 1's. ``mirror`` flips the crop left-right, so that one model serves both sides:
a right-side crop is seen as a left-side one. The card's ``stage2`` op carries the rule::

    {"op": "stage2", "organ": "Lens R", "key": "lens", "label": 9, "spacing": [...], "patch": [D, H, W],
     "anchor": {"organs": ["Eye R"], "offset_mm": [x, y, z], "mirror": true}}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ...volume import Volume

MIRROR = np.diag([-1.0, 1.0, 1.0])  # the crop's i axis runs towards patient right instead of left


@dataclass(frozen=True)
class AnchorRule:
    organs: tuple[str, ...]  # the crop centre is the mean of these organs' centroids ...
    offset_mm: tuple[float, float, float]  # ... moved by this LPS offset (mm)
    mirror: bool = False  # crop flipped left-right

    @classmethod
    def from_op(cls, op: Mapping) -> AnchorRule | None:
        """The rule of a card's ``stage2`` op; None for an op without one (crop on stage 1's own organ)."""
        rule = op.get("anchor")
        if not rule:
            return None
        return cls(tuple(rule["organs"]), tuple(float(v) for v in rule["offset_mm"]),  # type: ignore[arg-type]
                   bool(rule.get("mirror", False)))

    def to_dict(self) -> dict:
        return {"organs": list(self.organs), "offset_mm": [round(float(v), 2) for v in self.offset_mm],
                "mirror": self.mirror}


def organ_centroids(labels: Volume, values: Mapping[str, int], names: Iterable[str]) -> dict[str, np.ndarray]:
    """LPS centroid (mm) of the largest 26-connected component of each named organ present in the label map
    (a stray island of stage 1 must not drag the anchor away)."""
    from ...post.components import largest_in_crop
    from ...preprocess import bounding_box

    out = {}
    for name in names:
        box = bounding_box(labels.array == values[name]) if name in values else None
        if box is None:
            continue
        idx = np.argwhere(largest_in_crop(labels.array[box] == values[name])) + [b.start for b in box]
        out[name] = labels.index_to_physical(idx.mean(0)[::-1])
    return out


def anchor_point(rule: AnchorRule, centroids: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The crop centre (LPS mm): the anchors' mean centroid plus the offset; None when no anchor was found."""
    found = [centroids[name] for name in rule.organs if name in centroids]
    if not found:
        return None
    return np.mean(found, axis=0) + np.asarray(rule.offset_mm, float)


def crop_grid(reference: Volume, centre_lps: np.ndarray, spacing: Sequence[float], patch: Sequence[int],
              mirror: bool = False) -> Volume:
    """An empty crop grid of ``patch`` voxels (D, H, W) at ``spacing``, centred on a point, axes as the reference's
    (the i axis reversed with ``mirror``)."""
    size_ijk = np.array(patch[::-1], float)
    sp = np.asarray(spacing, float)
    direction = reference.direction @ MIRROR if mirror else reference.direction.copy()
    origin = np.asarray(centre_lps, float) - direction @ (sp * (size_ijk - 1) / 2)
    return Volume(np.zeros(tuple(patch), np.float32), tuple(sp), tuple(origin), direction, "crop")
