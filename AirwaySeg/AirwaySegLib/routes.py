"""Route planning and tree updates in-process, from the (possibly edited) segmentation node.

"Update from segmentation" reads the airway segment back as a label map and reruns the pipeline's
tree and route steps (``clinseg.tasks.airway.update_from_mask``). "Plan route" reuses the centerline
tree of the segmentation's current voxels (cached by their content, so edits are noticed) and only
plans the route, which takes well under a second once the tree exists.

The pipeline imports are deferred to the calls: this module loads even where the pipeline cannot.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np
import slicer
from ClinicalSegLib.mrml import ImportRequest, import_result, labelmap_from_segmentation_node, volume_from_volume_node

from clinseg.errors import InputError
from clinseg.result import Result
from clinseg.terminology import AIRWAY
from clinseg.volume import LPS_TO_RAS, Volume

from .task import LAYOUT, ROUTE_GROUP, check_scope

CACHE_SIZE = 4  # trees kept (a few segmentations edited side by side)


def airway_segment_id(segmentation_node: slicer.vtkMRMLSegmentationNode) -> str:
    """The airway segment: coded as airway structure, else named "Airway", else the only segment."""
    if segmentation_node is None:
        raise InputError("segmentation", "no segmentation node selected")
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    if not ids:
        raise InputError(segmentation_node.GetName(), "has no segments")
    code = AIRWAY.type[1]
    for segment_id in ids:
        segment = segmentation.GetSegment(segment_id)
        if segment.HasTerminology() and f"^{code}^" in segment.GetTerminology():
            return segment_id
    for segment_id in ids:
        if segmentation.GetSegment(segment_id).GetName().strip().lower() == AIRWAY.name.lower():
            return segment_id
    if len(ids) == 1:
        return ids[0]
    raise InputError(segmentation_node.GetName(),
                     f"has {len(ids)} segments and none is coded or named '{AIRWAY.name}'; rename the airway segment")


def airway_mask(segmentation_node: slicer.vtkMRMLSegmentationNode,
                reference_volume_node: slicer.vtkMRMLScalarVolumeNode | None = None) -> Volume:
    """Binary (0/1, uint8) airway mask read back from the segmentation, on the reference volume's grid if given."""
    reference = volume_from_volume_node(reference_volume_node) if reference_volume_node is not None else None
    labelmap, _segments = labelmap_from_segmentation_node(
        segmentation_node, [airway_segment_id(segmentation_node)], reference=reference)
    mask = (np.asarray(labelmap.array) > 0).astype(np.uint8)
    if not mask.any():
        raise InputError(segmentation_node.GetName(), "airway segment is empty")
    return labelmap.with_array(mask, name=f"{segmentation_node.GetName()} airway")


def target_lps(target: Any, index: int = 0) -> np.ndarray:
    """A target as LPS mm from a markups fiducial node (its ``index``-th point, world) or an RAS triple."""
    if target is None:
        raise InputError("target point", "no target point given")
    if hasattr(target, "GetNumberOfControlPoints"):
        count = target.GetNumberOfControlPoints()
        if count == 0:
            raise InputError(target.GetName(), "has no control point; place the target first")
        if not 0 <= index < count:
            raise InputError(target.GetName(), f"has no control point {index + 1} (it has {count})")
        ras = [0.0, 0.0, 0.0]
        target.GetNthControlPointPositionWorld(index, ras)
    else:
        ras = np.asarray(target, dtype=float).reshape(-1)
        if ras.shape != (3,) or not np.all(np.isfinite(ras)):
            raise InputError("target point", f"expected three finite RAS coordinates, got {target!r}")
    return LPS_TO_RAS @ np.asarray(ras, dtype=float)  # the same sign flip converts RAS to LPS


def _digest(mask: Volume) -> str:
    digest = hashlib.sha1(np.ascontiguousarray(mask.array).tobytes())
    digest.update(repr(mask.array.shape).encode())
    digest.update(np.round(mask.ijk_to_ras(), 6).tobytes())
    return digest.hexdigest()


class RoutePlanner:
    """Plans routes and rebuilds trees from segmentation nodes, keeping the last few trees in memory."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self.cache_size = cache_size
        self._trees: OrderedDict[str, Any] = OrderedDict()

    def tree(self, mask: Volume):
        """The centerline tree of ``mask`` (``clinseg.post.tree.extract_tree``), cached by the mask's content."""
        from clinseg.post.tree import extract_tree

        key = _digest(mask)
        if key in self._trees:
            self._trees.move_to_end(key)
            return self._trees[key]
        tree = extract_tree(mask)
        self._trees[key] = tree
        while len(self._trees) > self.cache_size:
            self._trees.popitem(last=False)
        return tree

    def cached(self, mask: Volume) -> bool:
        return _digest(mask) in self._trees

    def route_result(self, mask: Volume, target: Any, scope_diameter_mm: float | None = None) -> Result:
        """A ``Result`` holding only the route (curve + table) from the tree's root to ``target``."""
        from clinseg.post.route import plan_route

        check_scope(scope_diameter_mm)
        route = plan_route(self.tree(mask), target_lps(target), scope_diameter_mm)
        curve = route.to_curve()
        curve.attributes["group"] = ROUTE_GROUP
        return Result("airway", curves=[curve], tables=[route.to_table()], metrics={"route": route.summary()})

    def plan_route(
        self,
        scene: slicer.vtkMRMLScene,
        segmentation_node: slicer.vtkMRMLSegmentationNode,
        target: Any,
        scope_diameter_mm: float | None = None,
        reference_volume_node: slicer.vtkMRMLScalarVolumeNode | None = None,
    ) -> dict[str, Any]:
        """Plan a route to ``target`` (fiducial node or RAS point) in the segmentation's airway; replaces the
        segmentation's previous route, keeps its centerlines."""
        result = self.route_result(airway_mask(segmentation_node, reference_volume_node), target, scope_diameter_mm)
        return import_result(scene, result, LAYOUT, ImportRequest(reference_volume_node, segmentation_node))

    def update_from_segmentation(
        self,
        scene: slicer.vtkMRMLScene,
        segmentation_node: slicer.vtkMRMLSegmentationNode,
        target: Any = None,
        scope_diameter_mm: float | None = None,
        reference_volume_node: slicer.vtkMRMLScalarVolumeNode | None = None,
    ) -> dict[str, Any]:
        """Recompute centerlines, branch table and (with a target) route from the edited segmentation.

        The segmentation itself stays as the user left it; its previous tree and route are replaced.
        """
        from clinseg.tasks.airway import AirwayOptions, update_from_mask

        check_scope(scope_diameter_mm)
        point = tuple(float(v) for v in target_lps(target)) if target is not None else None
        mask = airway_mask(segmentation_node, reference_volume_node)
        result = update_from_mask(mask, AirwayOptions(target_lps=point, scope_diameter_mm=scope_diameter_mm))
        result.labelmap, result.segments = None, []
        return import_result(scene, result, LAYOUT, ImportRequest(reference_volume_node, segmentation_node))

