"""Shared pieces of the MRML adapters: the active scene, 4x4 matrices, parent transforms, subject hierarchy.

Imports ``slicer`` and ``vtk`` but never ``qt``, so everything here runs on a
headless ``slicer-core`` scene as well as inside the Slicer application.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from clinseg.errors import InputError

ATTRIBUTE_PREFIX = "ClinicalSeg."  # namespace of the node attributes and segment tags we write


def active_scene() -> slicer.vtkMRMLScene:
    """The application's scene (``slicer.mrmlScene``); raises when running outside the Slicer application."""
    scene = getattr(slicer, "mrmlScene", None)
    if scene is None:
        raise InputError("scene", "no active MRML scene (not running inside Slicer); pass a vtkMRMLScene explicitly")
    return scene


def vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    """A ``vtkMatrix4x4`` holding a 4x4 numpy matrix."""
    matrix = np.asarray(matrix, dtype=float)
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(matrix[r, c]))
    return out


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """The 4x4 numpy array of a ``vtkMatrix4x4``."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def node_to_world(node: slicer.vtkMRMLTransformableNode) -> np.ndarray:
    """4x4 RAS matrix from a node's local frame to world; raises when its parent transform is not linear.

    A linear parent transform is applied to the geometry (no resampling, so no
    loss); a non-linear one would need resampling, which must stay the user's choice.
    """
    transform = node.GetParentTransformNode()
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InputError(
            node.GetName(),
            f"is under the non-linear transform '{transform.GetName()}'; harden it first "
            "(Data module: right-click the node > Harden transform)",
        )
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return numpy_matrix(matrix)


def subject_hierarchy(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLSubjectHierarchyNode:
    """The scene's subject hierarchy node (created by the scene itself)."""
    sh = scene.GetSubjectHierarchyNode()
    if sh is None:
        raise InputError("scene", "has no subject hierarchy node")
    return sh


def sh_item(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLNode) -> int:
    """The subject hierarchy item of ``node``, created when no plugin made one (headless scenes)."""
    sh = subject_hierarchy(scene)
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(sh.GetSceneItemID(), node)
    return item


def sh_parent_of(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLNode | None) -> int:
    """The item under which results of ``node`` belong (its study or folder), or the scene item."""
    sh = subject_hierarchy(scene)
    if node is None:
        return sh.GetSceneItemID()
    item = sh.GetItemByDataNode(node)
    parent = sh.GetItemParent(item) if item else 0
    return parent or sh.GetSceneItemID()


def sh_folder(scene: slicer.vtkMRMLScene, name: str, parent_item: int | None = None) -> int:
    """A new subject hierarchy folder called ``name`` under ``parent_item`` (default: the scene)."""
    sh = subject_hierarchy(scene)
    return sh.CreateFolderItem(parent_item or sh.GetSceneItemID(), name)
