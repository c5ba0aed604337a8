"""Containers (spinal canal around the cord) in Slicer: the adapter's node and our layered .seg.nrrd, on slicer-core."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")
import vtk  # noqa: E402
from ClinicalSegLib.mrml import labelmap_from_segmentation_node, segmentation_node_from_labelmap  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from clinseg.io import read_segmentation, write_segmentation  # noqa: E402
from clinseg.terminology import Segment  # noqa: E402
from clinseg.volume import Volume  # noqa: E402

CORD = Segment(3, "Spinal cord", (1.0, 0.9, 0.0))
CANAL = Segment(4, "Spinal canal", (0.6, 0.85, 1.0), contains=("Spinal cord",))
BRAIN = Segment(1, "Brain", (0.98, 0.8, 0.8))


@pytest.fixture
def labelmap() -> Volume:
    k, j, i = np.mgrid[0:8, 0:20, 0:20]
    array = np.zeros(k.shape, np.uint8)
    array[np.hypot(i - 8, j - 8) <= 5] = CANAL.label
    array[np.hypot(i - 8, j - 8) <= 2] = CORD.label
    array[:3, 15:, 15:] = BRAIN.label
    return Volume(array, (1.0, 1.0, 2.5), (5.0, -10.0, 20.0), np.eye(3), "oar")


def segment_array(node, name: str) -> np.ndarray:
    """A segment's own binary labelmap (its layer == its label value), on the node's geometry."""
    segmentation = node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(name)
    image = slicer.vtkOrientedImageData()
    assert node.GetBinaryLabelmapRepresentation(segment_id, image)
    shape = tuple(reversed(image.GetDimensions()))
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape) > 0


def test_node_holds_the_canal_at_full_extent_and_reads_back_one_label_per_voxel(scene, labelmap):
    node = segmentation_node_from_labelmap(scene, labelmap, [BRAIN, CORD, CANAL])
    assert node.GetSegmentation().GetNumberOfLayers() == 2
    canal, cord = segment_array(node, "Spinal canal"), segment_array(node, "Spinal cord")
    assert np.count_nonzero(canal) == np.count_nonzero(np.isin(labelmap.array, [3, 4]))
    assert canal.shape == cord.shape and canal[cord].all()  # the canal segment holds every cord voxel
    tag = vtk.reference("")
    segment = node.GetSegmentation().GetSegment(node.GetSegmentation().GetSegmentIdBySegmentName("Spinal canal"))
    assert segment.GetTag("ClinicalSeg.Contains", tag) and str(tag) == "Spinal cord"
    back, segments = labelmap_from_segmentation_node(node)
    np.testing.assert_array_equal(back.array, labelmap.array)
    assert segments == [BRAIN, CORD, CANAL]


def test_slicer_reads_our_layered_file_and_writes_one_we_read(tmp_path, scene, labelmap):
    path = write_segmentation(tmp_path / "oar.seg.nrrd", labelmap, [BRAIN, CORD, CANAL])
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1  # Slicer's own reader
    assert node.GetSegmentation().GetNumberOfSegments() == 3
    canal, cord = segment_array(node, "Spinal canal"), segment_array(node, "Spinal cord")
    assert canal.sum() == np.isin(labelmap.array, [3, 4]).sum() and cord.sum() == (labelmap.array == 3).sum()
    assert canal[cord].all()
    again = tmp_path / "saved.seg.nrrd"  # Slicer saves it (as after a user's edit); the tag survives
    storage.SetFileName(str(again))
    assert storage.WriteData(node) == 1
    back, segments = read_segmentation(again)
    assert {s.name: s.contains for s in segments}["Spinal canal"] == ("Spinal cord",)
    assert {s.name: int((back.array == s.label).sum()) for s in segments} == {
        s.name: int((labelmap.array == s.label).sum()) for s in (BRAIN, CORD, CANAL)}
