"""MRML adapters: ``clinseg`` types <-> Slicer nodes, on any scene (the application's or a headless one).

Imports ``slicer`` and ``vtk`` only (never ``qt``), so it runs on ``slicer-core``. One function per
direction and type lives in ``mrml_<type>.py``; ``mrml_result`` turns a whole ``Result`` into nodes by a
task's layout. This module re-exports them.
"""

from __future__ import annotations

from .mrml_common import active_scene, node_to_world, sh_folder, sh_item, sh_parent_of, subject_hierarchy
from .mrml_markups import check_curves, curve_nodes_from_curves, curves_from_curve_nodes
from .mrml_result import (
    ImportRequest,
    NodeRole,
    ResultLayout,
    default_layout,
    derived_nodes,
    import_result,
    remove_derived,
    show_3d,
)
from .mrml_segmentation import labelmap_from_segmentation_node, segmentation_node_from_labelmap
from .mrml_table import check_table, table_from_table_node, table_node_from_table
from .mrml_volume import volume_from_volume_node, volume_node_from_volume

__all__ = [
    "ImportRequest",
    "NodeRole",
    "ResultLayout",
    "active_scene",
    "check_curves",
    "check_table",
    "curve_nodes_from_curves",
    "curves_from_curve_nodes",
    "default_layout",
    "derived_nodes",
    "import_result",
    "labelmap_from_segmentation_node",
    "node_to_world",
    "remove_derived",
    "segmentation_node_from_labelmap",
    "sh_folder",
    "sh_item",
    "sh_parent_of",
    "show_3d",
    "subject_hierarchy",
    "table_from_table_node",
    "table_node_from_table",
    "volume_from_volume_node",
    "volume_node_from_volume",
]
