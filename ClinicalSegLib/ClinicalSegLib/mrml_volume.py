"""Volume <-> ``vtkMRMLScalarVolumeNode``: voxels copied, geometry exact (oblique axes included).

``clinseg`` works in LPS; MRML in RAS. ``Volume.ijk_to_ras`` and
``Volume.from_ras_matrix`` are the only conversions used, so the two sides cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import slicer
import slicer.util
import vtk

from clinseg.errors import InputError
from clinseg.volume import Volume

from .mrml_common import node_to_world, numpy_matrix, vtk_matrix

VOLUME_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode")


def vtk_friendly(array: np.ndarray, subject: str) -> np.ndarray:
    """``array`` in a voxel type Slicer displays and saves (no bool, float16 or 64-bit integers)."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for dtype in (np.int32, np.uint32):
            if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
                return array.astype(dtype)
        raise InputError(subject, f"voxel values {low}..{high} do not fit a 32-bit integer")
    if array.dtype.kind not in "iuf":
        raise InputError(subject, f"voxel type {array.dtype} cannot be shown in Slicer")
    return array


def volume_node_from_volume(
    scene: slicer.vtkMRMLScene,
    volume: Volume,
    name: str | None = None,
    node_class: str = "vtkMRMLScalarVolumeNode",
) -> slicer.vtkMRMLScalarVolumeNode:
    """A new volume node in ``scene`` holding a copy of ``volume``'s voxels at its exact position."""
    subject = name or volume.name or "volume"
    if node_class not in VOLUME_CLASSES:
        raise InputError(subject, f"node class must be one of {VOLUME_CLASSES}, got {node_class}")
    if volume.array.ndim != 3:
        raise InputError(subject, f"must be a 3-D scalar volume, got array shape {volume.array.shape}")
    array = vtk_friendly(np.asarray(volume.array), subject)
    node = scene.AddNewNodeByClass(node_class, subject)
    node.SetIJKToRASMatrix(vtk_matrix(volume.ijk_to_ras()))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.CreateDefaultDisplayNodes()
    return node


def volume_from_volume_node(node: slicer.vtkMRMLScalarVolumeNode) -> Volume:
    """The voxels (copied) and world geometry of a scalar or label map volume node.

    A linear parent transform is folded into the geometry; a non-linear one raises.
    """
    if node is None:
        raise InputError("volume", "no volume node selected")
    name = node.GetName() or "volume"
    if node.GetClassName() not in VOLUME_CLASSES:
        raise InputError(name, f"is a {node.GetClassName()}; a scalar volume is expected")
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(name, "has no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(name, f"has {image.GetNumberOfScalarComponents()} components per voxel; 1 is expected")
    array = np.array(slicer.util.arrayFromVolume(node), copy=True)
    local = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(local)
    ijk_to_ras = node_to_world(node) @ numpy_matrix(local)
    return Volume.from_ras_matrix(array, ijk_to_ras, name)
