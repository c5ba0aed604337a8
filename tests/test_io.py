"""Volume and segmentation files: round trips with exact geometry, LPS/RAS conventions, atomic writes, bad inputs."""

from __future__ import annotations

import re
import struct

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from clinseg.errors import InputError
from clinseg.io import (
    atomic_output_dir,
    atomic_write,
    check_volume,
    read_segmentation,
    read_volume,
    write_segmentation,
    write_volume,
)
from clinseg.terminology import LUNG_LEFT, NODULE, Segment
from clinseg.volume import Volume

FLIP = np.diag([-1.0, -1.0, 1.0])
OBLIQUE = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
LEFT_HANDED = OBLIQUE @ np.diag([1.0, 1.0, -1.0])
FORMATS = [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"]


def oblique_volume(dtype=np.int16, direction=OBLIQUE) -> Volume:
    values = np.random.default_rng(0).uniform(-1000, 1000, size=(5, 6, 7))
    return Volume(values.astype(dtype), (0.7123456789, 0.81, 2.5), (-101.123456789, 22.2, -3.3), direction, "ct")


def corners(volume: Volume) -> np.ndarray:
    ni, nj, nk = volume.size_ijk
    ijk = np.array([[i, j, k] for i in (0, ni - 1) for j in (0, nj - 1) for k in (0, nk - 1)], dtype=float)
    return volume.index_to_physical(ijk)


# --- atomic writes -----------------------------------------------------------------------------------
def test_atomic_write_keeps_full_suffix_and_replaces(tmp_path):
    target = tmp_path / "out" / "case.seg.nrrd"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".seg.nrrd") and tmp != target
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["case.seg.nrrd"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    target = tmp_path / "mask.nii.gz"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]


def test_atomic_output_dir(tmp_path):
    target = tmp_path / "run"
    with atomic_output_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(FileExistsError, match="not empty"), atomic_output_dir(target):
        pass
    with pytest.raises(ValueError), atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
        raise ValueError("fails half way")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # old outputs intact
    with atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporaries left


# --- round trips ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
@pytest.mark.parametrize("direction", [OBLIQUE, LEFT_HANDED], ids=["oblique", "left-handed"])
def test_round_trip(tmp_path, suffix, dtype, direction):
    volume = oblique_volume(dtype, direction)
    path = write_volume(volume, tmp_path / f"ct{suffix}")
    back = read_volume(path)
    assert back.array.dtype == volume.array.dtype
    np.testing.assert_array_equal(back.array, volume.array)
    # NIfTI stores geometry as float32; the others keep doubles exactly.
    atol = 1e-5 if suffix.startswith(".nii") else 1e-12
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=atol)
    np.testing.assert_allclose(back.origin, volume.origin, atol=atol * 10)
    np.testing.assert_allclose(back.direction, volume.direction, atol=atol)
    np.testing.assert_allclose(corners(back), corners(volume), atol=atol * 100)
    assert back.name == "ct"


def test_nii_gz_beside_nii_reads_its_own_voxels(tmp_path):
    """ITK alone would read x.nii when asked for x.nii.gz."""
    write_volume(Volume(np.ones((3, 4, 5), np.float32)), tmp_path / "x.nii.gz")
    write_volume(Volume(np.zeros((3, 4, 5), np.float32)), tmp_path / "x.nii")
    assert read_volume(tmp_path / "x.nii.gz").array.mean() == 1.0
    assert read_volume(tmp_path / "x.nii").array.mean() == 0.0


def write_nifti_qform(path, array: np.ndarray, ras_rotation: np.ndarray, spacing, ras_origin) -> None:
    """A minimal NIfTI-1 file whose geometry is only a qform (RAS), written by hand (no ITK involved)."""
    qfac = 1.0
    rotation = ras_rotation.copy()
    if np.linalg.det(rotation) < 0:
        rotation[:, 2] *= -1
        qfac = -1.0
    x, y, z, w = Rotation.from_matrix(rotation).as_quat()
    if w < 0:
        x, y, z = -x, -y, -z
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    nk, nj, ni = array.shape
    struct.pack_into("<8h", header, 40, 3, ni, nj, nk, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 4, 16)  # datatype int16, bitpix
    struct.pack_into("<8f", header, 76, qfac, *spacing, 0, 0, 0, 0)
    struct.pack_into("<f", header, 108, 352.0)  # vox_offset
    header[123] = 2  # millimetres
    struct.pack_into("<hh", header, 252, 1, 0)  # qform_code scanner, no sform
    struct.pack_into("<6f", header, 256, x, y, z, *ras_origin)
    header[344:348] = b"n+1\0"
    path.write_bytes(bytes(header) + np.ascontiguousarray(array, dtype="<i2").tobytes())


def test_ras_nifti_and_lps_or_ras_nrrd_give_same_points(tmp_path):
    """One acquisition stored three ways: NIfTI qform (RAS), NRRD in LPS, NRRD in RAS space."""
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    spacing = (0.75, 0.9, 2.0)
    ras_rotation = Rotation.from_euler("xyz", [10, 5, -30], degrees=True).as_matrix()
    ras_origin = np.array([12.5, -40.0, 7.0])
    write_nifti_qform(tmp_path / "scan.nii", array, ras_rotation, spacing, ras_origin)
    ras_axes = ras_rotation @ np.diag(spacing)  # columns = i, j, k steps in RAS
    header = {"space": "left-posterior-superior", "space directions": (FLIP @ ras_axes).T}
    nrrd.write(str(tmp_path / "lps.nrrd"), array, {**header, "space origin": FLIP @ ras_origin}, index_order="C")
    header = {"space": "right-anterior-superior", "space directions": ras_axes.T, "space origin": ras_origin}
    nrrd.write(str(tmp_path / "ras.nrrd"), array, header, index_order="C")

    nifti, lps, ras = (read_volume(tmp_path / name) for name in ("scan.nii", "lps.nrrd", "ras.nrrd"))
    for volume in (nifti, lps, ras):
        np.testing.assert_array_equal(volume.array, array)
        np.testing.assert_allclose(volume.direction, FLIP @ ras_rotation, atol=1e-6)
        np.testing.assert_allclose(volume.origin, FLIP @ ras_origin, atol=1e-5)
        np.testing.assert_allclose(corners(volume), corners(lps), atol=1e-4)
        np.testing.assert_allclose(volume.ijk_to_ras()[:3, 3], ras_origin, atol=1e-5)


# --- segmentations -------------------------------------------------------------------------------------
def labelmap() -> tuple[Volume, list[Segment]]:
    array = np.zeros((4, 5, 6), np.uint8)
    array[1:3, 1:4, 1:3] = 1
    array[2, 2, 4] = 3
    segments = [LUNG_LEFT, Segment(3, "Nodule (reader 1)", (0.25, 0.5, 1.0), NODULE.category, NODULE.type)]
    return Volume(array, (0.7, 0.8, 2.5), (-10.0, 20.0, 30.0), OBLIQUE), segments


def test_segmentation_round_trip(tmp_path):
    volume, segments = labelmap()
    path = write_segmentation(tmp_path / "case.seg.nrrd", volume, segments)
    back, back_segments = read_segmentation(path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-12)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-12)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-12)
    assert back_segments == segments  # labels, names, colours, category/type/modifier codes


def test_segmentation_header_is_slicers(tmp_path):
    volume, segments = labelmap()
    path = write_segmentation(tmp_path / "case.seg.nrrd", volume, segments)
    header = nrrd.read_header(str(path))
    assert header["space"] == "left-posterior-superior"
    assert header["dimension"] == 3 and list(header["sizes"]) == [6, 5, 4]
    np.testing.assert_allclose(header["space directions"], (OBLIQUE @ np.diag(volume.spacing)).T, atol=1e-15)
    np.testing.assert_allclose(header["space origin"], volume.origin)
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert header["Segmentation_ContainedRepresentationNames"] == "Binary labelmap|"
    assert header["Segmentation_ReferenceImageExtentOffset"] == "0 0 0"
    assert header["Segment1_ID"] == "Segment_3" and header["Segment1_LabelValue"] == "3"
    assert header["Segment1_Name"] == "Nodule (reader 1)" and header["Segment1_Layer"] == "0"
    assert header["Segment1_Color"] == "0.25 0.5 1.0" and header["Segment1_ColorAutoGenerated"] == "0"
    assert header["Segment0_Extent"] == "0 5 0 4 0 3"
    assert header["Segment0_Tags"] == f"TerminologyEntry:{LUNG_LEFT.terminology_entry()}|"
    assert "SCT^7771000^Left" in header["Segment0_Tags"]


def test_segmentation_write_refuses_bad_labels(tmp_path):
    volume, segments = labelmap()
    with pytest.raises(InputError, match="unique and positive"):
        write_segmentation(tmp_path / "x.seg.nrrd", volume, [segments[0], segments[0]])
    with pytest.raises(InputError, match="integers"):
        write_segmentation(tmp_path / "x.seg.nrrd", volume.with_array(volume.array * 0.5), segments)
    assert not list(tmp_path.iterdir())


def test_segmentation_from_plain_label_map_and_old_layer_files(tmp_path):
    volume, _ = labelmap()
    write_volume(volume, tmp_path / "labels.nrrd")
    back, segments = read_segmentation(tmp_path / "labels.nrrd")
    assert [(s.label, s.name) for s in segments] == [(1, "Segment_1"), (3, "Segment_3")]
    np.testing.assert_array_equal(back.array, volume.array)
    # Slicer < 4.11: one 0/1 layer per segment on a 4-D list axis, no Layer or LabelValue fields.
    layers = np.stack([volume.array == 1, volume.array == 3], axis=-1).astype(np.uint8)
    header = {
        "space": "right-anterior-superior",
        "kinds": ["list", "domain", "domain", "domain"],  # header fields in file order: the layer axis first
        "space directions": np.vstack([np.full(3, np.nan), (FLIP @ volume.direction @ np.diag(volume.spacing)).T]),
        "space origin": FLIP @ np.asarray(volume.origin),
        "Segment0_Name": "first",
        "Segment1_Name": "second",
        "Segment1_Color": "1 0 0",
    }
    nrrd.write(str(tmp_path / "old.seg.nrrd"), layers, header, index_order="C")
    back, segments = read_segmentation(tmp_path / "old.seg.nrrd")
    assert [(s.label, s.name, s.color) for s in segments] == [(1, "first", (0.5, 0.5, 0.5)), (2, "second", (1, 0, 0))]
    np.testing.assert_array_equal(back.array, np.where(volume.array == 3, 2, volume.array))
    np.testing.assert_allclose(corners(back), corners(volume), atol=1e-9)


def slicer_segmentation(slicer, path, extents) -> None:
    """Have Slicer's own storage node write segments given as IJK extents (overlapping ones go to extra layers)."""
    import vtk
    from vtk.util import numpy_support

    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    for name, extent in extents.items():
        image = slicer.vtkOrientedImageData()
        image.SetExtent(*extent)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = 1
        image.SetSpacing(0.5, 0.7, 2.0)
        image.SetOrigin(-10.0, 20.0, 30.0)  # RAS
        segment = slicer.vtkSegment()
        segment.SetName(name)
        segment.SetColor(0.1, 0.2, 0.3)
        segment.AddRepresentation("Binary labelmap", image)
        node.GetSegmentation().AddSegment(segment, name)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.WriteData(node) == 1


@pytest.mark.parametrize("overlap", [False, True], ids=["3-D", "4-D layers"])
def test_reads_segmentation_written_by_slicer(tmp_path, overlap):
    slicer = pytest.importorskip("slicer")
    b_extent = (4, 8, 3, 6, 1, 3) if overlap else (6, 8, 3, 6, 1, 3)
    path = tmp_path / "slicer.seg.nrrd"
    slicer_segmentation(slicer, path, {"A": (2, 5, 3, 6, 1, 2), "B": b_extent})
    assert nrrd.read_header(str(path))["dimension"] == (4 if overlap else 3)
    if overlap:
        with pytest.warns(UserWarning, match="16 voxels belong to several segments"):
            volume, segments = read_segmentation(path)
    else:
        volume, segments = read_segmentation(path)
    assert [(s.name, s.color) for s in segments] == [("A", (0.1, 0.2, 0.3)), ("B", (0.1, 0.2, 0.3))]
    a, b = (volume.array == s.label for s in segments)
    assert b.sum() == (60 if overlap else 36) and a.sum() == (16 if overlap else 32)
    # Slicer's grid starts at the union's first voxel (2, 3, 1) of a RAS image at (-10, 20, 30).
    np.testing.assert_allclose(volume.spacing, (0.5, 0.7, 2.0))
    np.testing.assert_allclose(volume.ijk_to_ras()[:3, 3], (-10 + 2 * 0.5, 20 + 3 * 0.7, 30 + 1 * 2.0))
    k, j, i = np.argwhere(b)[0]
    assert (i, j, k) == ((4 if overlap else 6) - 2, 0, 0)


def test_slicer_reads_our_segmentation(tmp_path):
    slicer = pytest.importorskip("slicer")
    import vtk

    volume, segments = labelmap()
    path = write_segmentation(tmp_path / "case.seg.nrrd", volume, segments)
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    nodule = segmentation.GetSegment("Segment_3")
    assert nodule.GetName() == "Nodule (reader 1)" and nodule.GetLabelValue() == 3
    np.testing.assert_allclose(nodule.GetColor(), (0.25, 0.5, 1.0))
    assert nodule.GetTerminology() == segments[1].terminology_entry()
    matrix = vtk.vtkMatrix4x4()
    nodule.GetRepresentation("Binary labelmap").GetImageToWorldMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(ijk_to_ras, volume.ijk_to_ras(), atol=1e-9)


# --- bad inputs ----------------------------------------------------------------------------------------
def expect_error(path, pattern: str) -> str:
    with pytest.raises(InputError) as info:
        read_volume(path)
    message = str(info.value)
    assert message.startswith(f"{path.name}: "), message
    assert "\n" not in message
    assert re.search(pattern, message), message
    return message


def test_missing_file(tmp_path):
    expect_error(tmp_path / "absent.nii.gz", "file not found")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file(tmp_path, suffix):
    path = write_volume(oblique_volume(), tmp_path / f"ct{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    expect_error(path, "truncated|corrupt")


def test_garbage_file(tmp_path):
    path = tmp_path / "noise.nrrd"
    path.write_bytes(b"\x00\x01 not an image" * 20)
    expect_error(path, "cannot be read")


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG")
    expect_error(path, "unsupported format '.png'")


def test_2d_image(tmp_path):
    sitk.WriteImage(sitk.Image(5, 6, sitk.sitkInt16), str(tmp_path / "xray.nii.gz"))
    expect_error(tmp_path / "xray.nii.gz", r"is 2-D \(5 x 6 pixels\)")


def test_single_slice(tmp_path):
    sitk.WriteImage(sitk.Image(5, 6, 1, sitk.sitkInt16), str(tmp_path / "one.nrrd"))
    expect_error(tmp_path / "one.nrrd", r"is 2-D \(1 slice")


def test_vector_image(tmp_path):
    sitk.WriteImage(sitk.Image([5, 6, 4], sitk.sitkVectorFloat32, 3), str(tmp_path / "rgb.nrrd"))
    expect_error(tmp_path / "rgb.nrrd", "3 components per voxel")


def test_4d_image(tmp_path):
    sitk.WriteImage(sitk.Image([5, 6, 4, 3], sitk.sitkFloat32), str(tmp_path / "dwi.nii.gz"))
    expect_error(tmp_path / "dwi.nii.gz", "is 4-D")


def test_non_finite_voxels(tmp_path):
    array = np.zeros((4, 5, 6), np.float32)
    array[1, 2, 3], array[0, 0, 0] = np.nan, -np.inf
    path = write_volume(Volume(array), tmp_path / "nan.mha")
    expect_error(path, r"has 2 non-finite voxels \(NaN/inf\)")


@pytest.mark.parametrize("spacing", [(0.01, 1, 1), (1, 1, 25), (1, 0, 1)])
def test_absurd_spacing(tmp_path, spacing):
    image = sitk.Image(5, 6, 4, sitk.sitkInt16)
    header = {"space": "left-posterior-superior", "space directions": np.diag(spacing).astype(float)}
    if min(spacing) > 0:
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(tmp_path / "sp.nrrd"))
    else:  # ITK refuses to write such spacing: write the header by hand
        nrrd.write(str(tmp_path / "sp.nrrd"), np.zeros((4, 6, 5), np.int16), header, index_order="C")
    expect_error(tmp_path / "sp.nrrd", r"has an (absurd|invalid) voxel spacing \(\d")


def test_check_volume_names_the_input():
    with pytest.raises(InputError, match=r"^node 'CT': has an invalid voxel spacing \(1 x -1 x 1 mm\)$"):
        check_volume(Volume(np.zeros((3, 4, 5)), (1, -1, 1)), "node 'CT'")
    with pytest.raises(InputError, match="degenerate direction"):
        check_volume(Volume(np.zeros((3, 4, 5)), direction=np.zeros((3, 3))), "x")
    volume = Volume(np.zeros((3, 4, 5), np.int16), (0.5, 0.5, 3.0))
    assert check_volume(volume, "ok") is volume
