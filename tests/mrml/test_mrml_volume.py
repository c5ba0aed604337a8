"""Volume <-> scalar volume node on slicer-core's real MRML classes."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")
import vtk  # noqa: E402
from ClinicalSegLib.mrml import volume_from_volume_node, volume_node_from_volume  # noqa: E402
from ClinicalSegLib.mrml_common import numpy_matrix, vtk_matrix  # noqa: E402

from clinseg.errors import InputError  # noqa: E402
from clinseg.volume import Volume  # noqa: E402


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation about x, then y, then z (radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.fixture
def oblique() -> Volume:
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 2000, size=(5, 6, 7)).astype(np.int16)  # [k, j, i]
    return Volume(array, (0.7, 0.8, 2.5), (-12.5, 30.25, 101.0), rotation(0.3, -0.2, 0.5), "ct")


def node_matrix(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return numpy_matrix(m)


def test_ijk_to_ras_of_oblique_volume_matches_independent_computation(scene, oblique):
    node = volume_node_from_volume(scene, oblique, "ct")
    assert node.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert node.GetName() == "ct"
    # Voxel (i, j, k) = (3, 1, 4): LPS from the convention written out by hand, then L->R and P->A flipped.
    ijk = np.array([3.0, 1.0, 4.0])
    lps = np.array(oblique.origin) + rotation(0.3, -0.2, 0.5) @ (np.array([0.7, 0.8, 2.5]) * ijk)
    expected_ras = lps * np.array([-1.0, -1.0, 1.0])
    ras = (node_matrix(node) @ np.append(ijk, 1.0))[:3]
    np.testing.assert_allclose(ras, expected_ras, atol=1e-9)
    np.testing.assert_allclose(node.GetSpacing(), (0.7, 0.8, 2.5), atol=1e-12)
    np.testing.assert_allclose(node.GetOrigin(), [12.5, -30.25, 101.0], atol=1e-12)
    # Voxels copied with their [k, j, i] layout and type.
    image = node.GetImageData()
    assert image.GetDimensions() == (7, 6, 5)
    assert image.GetScalarComponentAsDouble(3, 1, 4, 0) == oblique.array[4, 1, 3]
    assert image.GetScalarTypeAsString() == "short"


def test_round_trip_is_lossless(scene, oblique):
    node = volume_node_from_volume(scene, oblique)
    back = volume_from_volume_node(node)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, oblique.array)
    np.testing.assert_allclose(back.spacing, oblique.spacing, atol=1e-12)
    np.testing.assert_allclose(back.origin, oblique.origin, atol=1e-12)
    np.testing.assert_allclose(back.direction, oblique.direction, atol=1e-12)
    assert back.name == "ct"
    back.array[0, 0, 0] += 1  # a copy: the node's voxels do not change
    assert slicer.util.arrayFromVolume(node)[0, 0, 0] == oblique.array[0, 0, 0]


def test_linear_parent_transform_is_folded_into_the_geometry(scene, oblique):
    node = volume_node_from_volume(scene, oblique)
    to_parent = np.eye(4)
    to_parent[:3, :3] = rotation(0.0, 0.0, np.pi / 2)
    to_parent[:3, 3] = (5.0, -3.0, 2.0)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "move")
    transform.SetMatrixTransformToParent(vtk_matrix(to_parent))
    node.SetAndObserveTransformNodeID(transform.GetID())
    back = volume_from_volume_node(node)
    world = to_parent @ oblique.ijk_to_ras()
    np.testing.assert_allclose(back.ijk_to_ras(), world, atol=1e-9)
    np.testing.assert_array_equal(back.array, oblique.array)


def test_non_linear_parent_transform_raises(scene, oblique):
    node = volume_node_from_volume(scene, oblique)
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for p, q in [((0, 0, 0), (1, 0, 0)), ((50, 0, 0), (50, 2, 0)), ((0, 50, 0), (0, 50, 3)), ((0, 0, 50), (2, 0, 50))]:
        source.InsertNextPoint(*p)
        target.InsertNextPoint(*q)
    warp = vtk.vtkThinPlateSplineTransform()
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    warp.SetBasisToR()
    transform = scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    transform.SetAndObserveTransformToParent(warp)
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="non-linear transform 'warp'; harden it"):
        volume_from_volume_node(node)


def test_voxel_types_are_made_displayable(scene):
    mask = Volume(np.eye(4, dtype=bool)[None].repeat(2, axis=0))
    assert slicer.util.arrayFromVolume(volume_node_from_volume(scene, mask)).dtype == np.uint8
    labels = Volume(np.arange(8, dtype=np.int64).reshape(2, 2, 2))
    node = volume_node_from_volume(scene, labels, node_class="vtkMRMLLabelMapVolumeNode")
    assert node.GetClassName() == "vtkMRMLLabelMapVolumeNode"
    assert slicer.util.arrayFromVolume(node).dtype == np.int32
    np.testing.assert_array_equal(volume_from_volume_node(node).array, labels.array)
    with pytest.raises(InputError, match="must be a 3-D scalar volume"):
        volume_node_from_volume(scene, Volume(np.zeros((2, 2, 2, 3))), "rgb")
    with pytest.raises(InputError, match="do not fit a 32-bit integer"):
        volume_node_from_volume(scene, Volume(np.full((2, 2, 2), 2**40, dtype=np.int64)), "huge")


def test_saved_by_slicer_and_read_by_itk_at_the_same_place(scene, oblique, tmp_path):
    """Slicer's own NRRD writer and SimpleITK's reader agree with the LPS Volume: the convention is right."""
    import SimpleITK as sitk

    node = volume_node_from_volume(scene, oblique)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(tmp_path / "ct.nrrd"))
    assert storage.WriteData(node)
    back = Volume.from_sitk(sitk.ReadImage(str(tmp_path / "ct.nrrd")))
    np.testing.assert_array_equal(back.array, oblique.array)
    np.testing.assert_allclose(back.ijk_to_lps(), oblique.ijk_to_lps(), atol=1e-6)
