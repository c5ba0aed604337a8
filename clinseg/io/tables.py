"""Tables as CSV (one row per branch, nodule, lesion...)."""

from __future__ import annotations

import csv
from pathlib import Path

from ..result import Table
from .atomic import atomic_write


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_table(path: str | Path, table: Table) -> Path:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(list(table.columns))
        for row in zip(*table.columns.values()):
            writer.writerow([_cell(v) for v in row])
    return Path(path)


def read_table(path: str | Path, name: str | None = None) -> Table:
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    header, body = rows[0], rows[1:]
    return Table(name or Path(path).stem, {h: [r[n] for r in body] for n, h in enumerate(header)})
