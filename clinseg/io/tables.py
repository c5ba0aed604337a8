"""Tables as CSV (one row per branch, nodule, lesion...)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..result import Table
from .atomic import atomic_write


def _cell(value) -> str:
    # Seven significant digits: a table's producer rounds its values; 4 (as before) cut an LPS centre of
    # 125.94 mm to 125.9, which moved a nodule's point and its evaluation match by up to 0.05 mm.
    if isinstance(value, float):
        return f"{value:.7g}"
    return "" if value is None else str(value)


def write_table(path: str | Path, table: Table) -> Path:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(list(table.columns))
        for row in zip(*table.columns.values()):
            writer.writerow([_cell(v) for v in row])
    return Path(path)


def read_table(path: str | Path, name: str | None = None, typed: bool = False) -> Table:
    """A CSV back as a Table of text cells; ``typed`` turns all-number columns back into numbers."""
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    header, body = rows[0], rows[1:]
    table = Table(name or Path(path).stem, {h: [r[n] for r in body] for n, h in enumerate(header)})
    return typed_table(table) if typed else table


def _number(text: str) -> float | int:
    value = float(text)
    if math.isfinite(value) and value == int(value) and "." not in text and "e" not in text.lower():
        return int(value)
    return value


def typed_table(table: Table) -> Table:
    """Numbers back from CSV text: a column whose non-empty cells all parse as numbers becomes numeric.

    Empty cells become ``None`` in numeric columns (NaN in a Slicer table node), so lengths and diameters
    sort as numbers rather than as text; a column with no number at all stays text.
    """
    columns: dict[str, list] = {}
    for key, values in table.columns.items():
        texts = [str(v).strip() for v in values]
        try:
            numbers = [None if t == "" else _number(t) for t in texts]
        except ValueError:
            columns[key] = list(values)
            continue
        columns[key] = numbers if any(n is not None for n in numbers) else list(values)
    return Table(table.name, columns)
