"""What a task pipeline returns: everything in physical (LPS mm) coordinates.

The CLI writers and the Slicer adapters both consume this one type, so a batch
run and a click in Slicer produce the same files and nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .terminology import Segment
from .volume import Volume


@dataclass
class Curve:
    """A centerline or route: ordered LPS points with a lumen radius per point."""

    name: str
    points: np.ndarray  # (N, 3) LPS mm
    radii: np.ndarray | None = None  # (N,) mm
    parent: str | None = None  # name of the parent curve in a tree
    attributes: dict = field(default_factory=dict)  # generation, anatomical name, length...


@dataclass
class Table:
    """A named table (column name -> values), e.g. one row per branch or nodule."""

    name: str
    columns: dict[str, list]

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def rows(self) -> list[dict]:
        keys = list(self.columns)
        return [dict(zip(keys, values)) for values in zip(*self.columns.values())]


@dataclass
class Result:
    """Label map + named segments + curves + tables + figures of one run."""

    task: str
    labelmap: Volume | None = None  # integer labels on the input's grid
    segments: list[Segment] = field(default_factory=list)  # one per label value
    curves: list[Curve] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # timings, volumes, warnings...
    files: dict[str, Path] = field(default_factory=dict)  # written outputs by role
