"""MRML adapters: ``clinseg`` types <-> Slicer nodes, on any scene (the application's or a headless one).

Imports ``slicer`` and ``vtk`` only (never ``qt``), so it runs on ``slicer-core``.
One function per direction and type lives in ``mrml_<type>.py``; this module
re-exports them and turns a whole ``Result`` into nodes.
"""

from __future__ import annotations

from typing import Any

import slicer

from clinseg.result import Result

from .mrml_common import active_scene, node_to_world, sh_folder, sh_item, sh_parent_of, subject_hierarchy
from .mrml_markups import check_curves, curve_nodes_from_curves, curves_from_curve_nodes
from .mrml_segmentation import labelmap_from_segmentation_node, segmentation_node_from_labelmap
from .mrml_table import check_table, table_from_table_node, table_node_from_table
from .mrml_volume import volume_from_volume_node, volume_node_from_volume

__all__ = [
    "active_scene",
    "curve_nodes_from_curves",
    "curves_from_curve_nodes",
    "labelmap_from_segmentation_node",
    "node_to_world",
    "nodes_from_result",
    "segmentation_node_from_labelmap",
    "table_from_table_node",
    "table_node_from_table",
    "volume_from_volume_node",
    "volume_node_from_volume",
]


def nodes_from_result(
    scene: slicer.vtkMRMLScene,
    result: Result,
    reference_volume_node: slicer.vtkMRMLScalarVolumeNode | None = None,
    segmentation_node: slicer.vtkMRMLSegmentationNode | None = None,
    overwrite: bool = False,
    folder_name: str | None = None,
    closed_surface: bool = False,
) -> dict[str, Any]:
    """All nodes of one run, grouped by role.

    Returns ``{"folder": SH item id, "segmentation": node or None, "curves": [nodes],
    "tables": [nodes]}``. New nodes go in one subject hierarchy folder next to
    the reference volume (same study); ``segmentation_node`` (the user's choice
    of output) is filled in place and left where it is, and raises when it holds
    segments unless ``overwrite=True``.
    """
    name = folder_name or f"{result.task} results"
    sh = subject_hierarchy(scene)
    check_curves(result.curves)  # every check before the first node, so a refusal leaves the scene untouched
    for table in result.tables:
        check_table(table)
    segmentation = None
    if result.labelmap is not None:
        segmentation = segmentation_node_from_labelmap(
            scene,
            result.labelmap,
            result.segments,
            name=f"{result.task} segmentation",
            reference_volume_node=reference_volume_node,
            existing_node=segmentation_node,
            overwrite=overwrite,
            closed_surface=closed_surface,
        )
    folder = sh_folder(scene, name, sh_parent_of(scene, reference_volume_node))
    if segmentation is not None and segmentation_node is None:
        sh.SetItemParent(sh_item(scene, segmentation), folder)
    curves = curve_nodes_from_curves(scene, result.curves, f"{result.task} curves", folder) if result.curves else []
    tables = []
    for table in result.tables:
        node = table_node_from_table(scene, table)
        sh.SetItemParent(sh_item(scene, node), folder)
        tables.append(node)
    return {"folder": folder, "segmentation": segmentation, "curves": curves, "tables": tables}
