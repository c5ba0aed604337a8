"""DICOM series reading: synthetic series written with pydicom, plus the real LIDC slabs when ../shared is present."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy.spatial.transform import Rotation

from clinseg.errors import InputError
from clinseg.io import list_series, read_volume

ROTATION = Rotation.from_euler("zyx", [25, -15, 10], degrees=True).as_matrix()  # oblique acquisition


def write_series(
    folder,
    stored: np.ndarray,
    positions_k=None,
    spacing=(0.8, 0.6, 2.0),
    origin=(-50.0, 30.0, 100.0),
    rotation=ROTATION,
    slope=2.0,
    intercept=-1024.0,
    uid=None,
    description="synthetic",
    seed=0,
):
    """One file per slice, named and numbered in shuffled order; stored[k, j, i] are raw pixel values."""
    folder.mkdir(parents=True, exist_ok=True)
    nk, nj, ni = stored.shape
    uid = uid or generate_uid()
    row, col, normal = rotation[:, 0], rotation[:, 1], rotation[:, 2]
    ks = np.arange(nk) if positions_k is None else np.asarray(positions_k)
    order = np.random.default_rng(seed).permutation(nk)
    for n, k in enumerate(order):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.SeriesInstanceUID = uid
        ds.StudyInstanceUID = "1.2.3.4"
        ds.SeriesDescription = description
        ds.InstanceNumber = int(n + 1)  # deliberately unrelated to position
        position = np.asarray(origin) + normal * spacing[2] * ks[k]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *col)]
        ds.PixelSpacing = [str(spacing[1]), str(spacing[0])]  # (between rows, between columns)
        ds.SliceThickness = str(spacing[2])
        ds.Rows, ds.Columns = nj, ni
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = str(slope)
        ds.RescaleIntercept = str(intercept)
        ds.PixelData = np.ascontiguousarray(stored[k].astype("<i2")).tobytes()
        ds.save_as(folder / f"IM{n:04d}", enforce_file_format=True)
    return uid


@pytest.fixture
def stored() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 2000, size=(6, 5, 7)).astype(np.int16)


def test_oblique_rescaled_shuffled_series(tmp_path, stored):
    write_series(tmp_path / "ct", stored)
    volume = read_volume(tmp_path / "ct")
    assert volume.shape == (6, 5, 7)
    assert volume.array.dtype == np.int16  # integer slope/intercept stay integers
    np.testing.assert_array_equal(volume.array, stored.astype(int) * 2 - 1024)
    np.testing.assert_allclose(volume.spacing, (0.8, 0.6, 2.0), atol=1e-6)
    np.testing.assert_allclose(volume.origin, (-50, 30, 100), atol=1e-5)
    np.testing.assert_allclose(volume.direction, ROTATION, atol=1e-7)
    assert volume.name == "synthetic"


def test_geometry_matches_simpleitk_gdcm(tmp_path, stored):
    """Cross-check against ITK's own series reader: same voxels at the same physical points."""
    import SimpleITK as sitk

    write_series(tmp_path / "ct", stored)
    ours = read_volume(tmp_path / "ct")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    theirs = reader.Execute()
    np.testing.assert_array_equal(ours.array, sitk.GetArrayFromImage(theirs))
    for ijk in [(0, 0, 0), (6, 4, 5), (3, 1, 2)]:
        np.testing.assert_allclose(ours.index_to_physical(ijk), theirs.TransformIndexToPhysicalPoint(ijk), atol=1e-4)


def test_fractional_rescale_gives_float(tmp_path, stored):
    write_series(tmp_path / "ct", stored, slope=0.5, intercept=-10.25)
    volume = read_volume(tmp_path / "ct")
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array, stored * 0.5 - 10.25)


def test_single_file_reads_its_series(tmp_path, stored):
    write_series(tmp_path / "ct", stored)
    one = sorted((tmp_path / "ct").iterdir())[3]
    assert read_volume(one).shape == (6, 5, 7)


def test_missing_slice_is_reported(tmp_path, stored):
    write_series(tmp_path / "ct", stored, positions_k=[0, 1, 2, 4, 5, 6])  # slice 3 absent: 4 mm gap
    with pytest.raises(InputError, match=r"^ct: missing slices: gap of 4 mm at position [-\d.]+ mm") as info:
        read_volume(tmp_path / "ct")
    assert "\n" not in str(info.value)


def test_uneven_spacing_is_reported(tmp_path, stored):
    write_series(tmp_path / "ct", stored, positions_k=[0, 1, 2, 3.3, 4.3, 5.3])
    with pytest.raises(InputError, match=r"uneven slice spacing: gap of 2.6 mm"):
        read_volume(tmp_path / "ct")


def test_duplicate_positions_are_reported(tmp_path, stored):
    write_series(tmp_path / "ct", stored, positions_k=[0, 1, 2, 2, 3, 4])
    with pytest.raises(InputError, match="repeat a position"):
        read_volume(tmp_path / "ct")


def test_single_slice_series_is_2d(tmp_path, stored):
    write_series(tmp_path / "ct", stored[:1])
    with pytest.raises(InputError, match=r"^ct: is 2-D \(1 slice"):
        read_volume(tmp_path / "ct")


def test_two_series_must_be_chosen(tmp_path, stored):
    uid_a = write_series(tmp_path / "study" / "a", stored, description="lung")
    uid_b = write_series(tmp_path / "study" / "b", stored[:4], description="soft tissue", seed=2)
    found = list_series(tmp_path / "study")
    assert [(s.uid, s.description, s.n_slices) for s in found] == [(uid_a, "lung", 6), (uid_b, "soft tissue", 4)]
    with pytest.raises(InputError) as info:
        read_volume(tmp_path / "study")
    message = str(info.value)
    assert message.startswith("study: holds 2 series")
    assert f"{uid_a} 'lung' (CT, 6 slices)" in message and f"{uid_b} 'soft tissue' (CT, 4 slices)" in message
    assert read_volume(tmp_path / "study", series_uid=uid_b).shape == (4, 5, 7)
    with pytest.raises(InputError, match="no series with UID 9.9.9"):
        read_volume(tmp_path / "study", series_uid="9.9.9")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="^empty: holds no DICOM image files"):
        read_volume(tmp_path / "empty")


@pytest.mark.parametrize("case", ["LIDC-IDRI-0001", "LIDC-IDRI-0002"])
def test_real_lidc_series_matches_nifti(shared, case):
    folder = shared / "data" / "lidc" / case
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    dicom = read_volume(folder / "dicom")
    nifti = read_volume(folder / f"{case}_slab_ct.nii.gz")
    assert dicom.shape == nifti.shape
    np.testing.assert_array_equal(dicom.array, nifti.array)
    np.testing.assert_allclose(dicom.spacing, nifti.spacing, atol=1e-5)
    np.testing.assert_allclose(dicom.origin, nifti.origin, atol=1e-4)
    np.testing.assert_allclose(dicom.direction, nifti.direction, atol=1e-6)
    far_corner = np.array(dicom.size_ijk) - 1
    np.testing.assert_allclose(dicom.index_to_physical(far_corner), nifti.index_to_physical(far_corner), atol=1e-3)
