"""Which real head & neck OAR masks lie inside which: the evidence for OARSeg's containment relation.

Usage: .venv/bin/python bench/hn_containment.py [--shared DIR] [--limit N] [--threshold 0.05]

For every scan of ``hn_oar_masks`` (both splits), both annotators and every ordered pair of organs (A, B), the
fraction of A's voxels that also belong to B. Printed: per pair above the threshold in any mask set, the mean, min
and max fraction over the scans that have both organs, then the relation ``clinseg.tasks.oar.organs.CONTAINS``
declares and whether every declared pair held at >= 0.99 everywhere.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from clinseg.datasets.hn_oar import ANNOTATORS, HnOarCase, read_hn_oar
from clinseg.shared import shared_dir
from clinseg.tasks.oar.organs import CONTAINS

Box = tuple[slice, slice, slice]


def _boxed(case: HnOarCase, annotator: str) -> dict[str, tuple[Box, np.ndarray]]:
    """Each organ's voxels as (bounding box, mask inside it): 21 full-size masks at once would not fit."""
    out = {}
    for organ in case.organs(annotator):
        mask = case.load(annotator, [organ])[organ].array.astype(bool)
        where = np.argwhere(mask)
        if len(where):
            box = tuple(slice(lo, hi + 1) for lo, hi in zip(where.min(0), where.max(0)))
            out[organ] = (box, mask[box])
    return out


def inside_fractions(case: HnOarCase, annotator: str) -> dict[tuple[str, str], float]:
    """(A, B) -> share of A's voxels inside B, for every pair of organs whose boxes meet (others are 0)."""
    boxed = _boxed(case, annotator)
    out = {}
    for a, (box_a, mask_a) in boxed.items():
        for b, (box_b, mask_b) in boxed.items():
            if a == b:
                continue
            common = tuple(slice(max(p.start, q.start), min(p.stop, q.stop)) for p, q in zip(box_a, box_b))
            if any(s.start >= s.stop for s in common):
                continue
            part_a = mask_a[tuple(slice(c.start - p.start, c.stop - p.start) for c, p in zip(common, box_a))]
            part_b = mask_b[tuple(slice(c.start - q.start, c.stop - q.start) for c, q in zip(common, box_b))]
            shared = int(np.count_nonzero(part_a & part_b))
            if shared:
                out[(a, b)] = shared / int(np.count_nonzero(mask_a))
    return out


def survey(cases: list[HnOarCase]) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], int]]:
    """Per pair the fractions over every (scan, annotator) holding both organs, and how many such mask sets."""
    fractions: dict[tuple[str, str], list[float]] = defaultdict(list)
    both: dict[tuple[str, str], int] = defaultdict(int)
    for case in cases:
        for annotator in ANNOTATORS:
            if annotator not in case.files:
                continue
            organs = case.organs(annotator)
            found = inside_fractions(case, annotator)
            for a in organs:
                for b in organs:
                    if a != b:
                        both[(a, b)] += 1
                        fractions[(a, b)].append(found.get((a, b), 0.0))
    return fractions, both


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threshold", type=float, default=0.05)
    args = parser.parse_args()
    root = (args.shared or shared_dir() or Path("../shared")) / "data" / "hn_oar_masks"
    cases = read_hn_oar(root)[: args.limit]
    fractions, both = survey(cases)
    print(f"{len(cases)} scans x {len(ANNOTATORS)} annotators; pairs with a share above {args.threshold:g} anywhere:")
    print(f"{'A':<16}{'inside B':<16}{'sets':>5}{'mean':>8}{'min':>8}{'max':>8}")
    for (a, b), values in sorted(fractions.items(), key=lambda item: -max(item[1])):
        if max(values) > args.threshold:
            print(f"{a:<16}{b:<16}{both[(a, b)]:>5}{np.mean(values):>8.3f}{min(values):>8.3f}{max(values):>8.3f}")
    held = all(min(fractions.get((inner, outer), [0.0])) >= 0.99 for outer, inners in CONTAINS.items()
               for inner in inners)
    declared = ", ".join(f"{outer} contains {', '.join(inners)}" for outer, inners in CONTAINS.items())
    print(f"declared: {declared}; every declared pair >= 0.99 in every mask set: {held}")


if __name__ == "__main__":
    main()
