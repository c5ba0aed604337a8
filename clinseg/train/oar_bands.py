"""The ``z_band`` op of an OAR card: per organ, the heights (mm, relative to an anchor organ's centroid) where
the training masks put it, widened by a margin (``clinseg.tasks.oar.zbands``).

``python -m clinseg.train.oar_bands CACHE`` reads a ``clinseg train oar`` cache (its training split) and prints
the op as JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..tasks.oar.zbands import height_map
from ..terminology import HN_ORGANS
from ..volume import Volume

MARGIN_MM = 15.0


def learn_z_bands(label_maps: Sequence[Volume], anchor_value: int,
                  margin_mm: float = MARGIN_MM) -> dict[str, list[float | None]]:
    """Organ name -> [low, high] heights relative to the anchor's centroid over all cases, +- ``margin_mm``; an
    end is ``None`` (open) when the organ reached that end of a scan in some case (the scan cut it)."""
    names = {s.label: s.name for s in HN_ORGANS}
    low: dict[int, float | None] = {}
    high: dict[int, float | None] = {}
    for labels in label_maps:
        anchor = np.argwhere(labels.array == anchor_value)
        if not len(anchor):
            continue
        z = np.broadcast_to(height_map(labels), labels.shape) - labels.index_to_physical(anchor.mean(0)[::-1])[2]
        for value in np.unique(labels.array):
            if value == 0 or value == anchor_value or value not in names:
                continue
            mask = labels.array == value
            slices = np.flatnonzero(mask.any((1, 2)))
            zs = z[mask]
            lo, hi = float(zs.min()) - margin_mm, float(zs.max()) + margin_mm
            cut = (slices[0] == 0, slices[-1] == labels.shape[0] - 1)
            if value not in low or (low[value] is not None and (cut[0] or lo < low[value])):  # type: ignore
                low[value] = None if cut[0] else lo
            if value not in high or (high[value] is not None and (cut[1] or hi > high[value])):  # type: ignore
                high[value] = None if cut[1] else hi
    return {names[v]: [None if low[v] is None else round(low[v], 1), None if high[v] is None else round(high[v], 1)]
            for v in sorted(low)}


def main(argv: Sequence[str] | None = None) -> int:
    from .oar import load_prepared

    p = argparse.ArgumentParser(prog="python -m clinseg.train.oar_bands", description=__doc__.splitlines()[0])
    p.add_argument("cache", type=Path, help="clinseg train oar --cache folder")
    p.add_argument("--splits", default="test", help="whose cached cases (the training split)")
    p.add_argument("--anchor", default="Brain")
    p.add_argument("--margin-mm", type=float, default=MARGIN_MM)
    args = p.parse_args(argv)
    index = json.loads((args.cache / "index.json").read_text())
    maps = []
    for key, files in index.items():
        fields = json.loads(key)
        if fields.get("splits") == args.splits.split(","):
            maps += [Volume(load_prepared(args.cache / f).labels, tuple(fields["spacing"])) for f in files]
            break
    anchor = {s.name: s.label for s in HN_ORGANS}[args.anchor]
    op = {"op": "z_band", "anchor": args.anchor, "margin_mm": args.margin_mm, "cases": len(maps),
          "bands_mm": learn_z_bands(maps, anchor, args.margin_mm)}
    print(json.dumps(op))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
