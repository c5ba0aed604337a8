"""``clinseg.result.Table`` <-> ``vtkMRMLTableNode`` with typed columns.

A column whose values are all numbers (or missing) becomes a double column,
missing values as NaN; any other column becomes a string column. Typed columns
sort numerically in Slicer's table view and save with their type in the schema.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import slicer
import vtk

from clinseg.errors import InputError
from clinseg.result import Table


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real | np.number) and not isinstance(value, str)


def _column(name: str, values: list) -> vtk.vtkAbstractArray:
    if all(_is_missing(v) or _is_number(v) for v in values) and not all(v is None for v in values):
        array = vtk.vtkDoubleArray()
        for v in values:
            array.InsertNextValue(math.nan if _is_missing(v) else float(v))
    else:
        array = vtk.vtkStringArray()
        for v in values:
            array.InsertNextValue("" if v is None else str(v))
    array.SetName(name)
    return array


def check_table(table: Table, subject: str | None = None) -> None:
    """Raise when the columns of ``table`` differ in length."""
    lengths = {key: len(values) for key, values in table.columns.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(subject or table.name or "table", f"columns have different lengths: {lengths}")


def table_node_from_table(scene: slicer.vtkMRMLScene, table: Table, name: str | None = None) -> slicer.vtkMRMLTableNode:
    """A new table node holding ``table``: one typed column per entry, rows in order."""
    subject = name or table.name or "table"
    check_table(table, subject)
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", subject)
    was_modifying = node.StartModify()
    try:
        node.SetUseColumnTitleAsColumnHeader(True)  # column titles default to the names
        vtk_table = node.GetTable()
        for key, values in table.columns.items():
            vtk_table.AddColumn(_column(str(key), list(values)))
    finally:
        node.EndModify(was_modifying)
    node.Modified()
    return node


def append_rows(node: slicer.vtkMRMLTableNode, table: Table) -> None:
    """Append the rows of ``table`` to ``node``, each value under the node's column of the same name (a column the
    node lacks is refused; one ``table`` lacks gets empty cells). An empty node's columns take their types from
    the rows (an empty result's table has no types yet); otherwise a value takes its column's type."""
    check_table(table, node.GetName())
    vtk_table = node.GetTable()
    names = [vtk_table.GetColumnName(c) for c in range(vtk_table.GetNumberOfColumns())]
    missing = [str(key) for key in table.columns if str(key) not in names]
    if missing:
        raise InputError(node.GetName(), f"has no column {', '.join(missing)}")
    count = len(next(iter(table.columns.values()), []))
    rows = {name: list(table.columns.get(name, [None] * count)) for name in names}
    was_modifying = node.StartModify()
    try:
        if vtk_table.GetNumberOfRows() == 0:
            for name in names:
                vtk_table.RemoveColumnByName(name)
            for name in names:
                vtk_table.AddColumn(_column(name, rows[name]))
        else:
            for name in names:
                array = vtk_table.GetColumnByName(name)
                numeric = isinstance(array, vtk.vtkDataArray)
                for v in rows[name]:
                    if numeric:
                        array.InsertNextValue(float(v) if _is_number(v) and not _is_missing(v) else math.nan)
                    else:
                        array.InsertNextValue("" if v is None else str(v))
        vtk_table.Modified()
    finally:
        node.EndModify(was_modifying)
    node.Modified()


def table_from_table_node(node: slicer.vtkMRMLTableNode) -> Table:
    """A ``Table`` from a table node: numeric columns as floats, others as strings."""
    if node is None:
        raise InputError("table", "no table node selected")
    vtk_table = node.GetTable()
    columns: dict[str, list] = {}
    for c in range(vtk_table.GetNumberOfColumns()):
        array = vtk_table.GetColumn(c)
        n = array.GetNumberOfTuples()
        if isinstance(array, vtk.vtkDataArray):
            columns[array.GetName()] = [float(array.GetTuple1(i)) for i in range(n)]
        else:
            columns[array.GetName()] = [str(array.GetValue(i)) for i in range(n)]
    return Table(node.GetName(), columns)
