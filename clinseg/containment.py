"""Segments that contain others (``Segment.contains``): full masks from a one-label-per-voxel map, and back.

A label map holds one label per voxel, so a structure drawn inside another (spinal cord in spinal canal, lens in
eye) takes its voxels from the container there. Clinically the container includes it: its full mask is its own
label plus the labels of every segment it contains (transitively). Writers that can overlap (layered
``.seg.nrrd``, Slicer segmentation layers, RTSTRUCT ROIs, DICOM SEG segments) give each segment its full mask;
readers rebuild the label map by painting containers first, so the contained segments keep their voxels.
Containment is by segment name (the names travel through every format); an unknown name is ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from .terminology import Segment


def contained_labels(segment: Segment, segments: Sequence[Segment]) -> list[int]:
    """Label values of the segments inside ``segment``, transitively (a cycle stops at segments already seen)."""
    by_name = {s.name: s for s in segments}
    seen, stack, out = {segment.name}, list(segment.contains), []
    while stack:
        inner = by_name.get(stack.pop())
        if inner is None or inner.name in seen:
            continue
        seen.add(inner.name)
        out.append(inner.label)
        stack.extend(inner.contains)
    return sorted(out)


def segment_mask(labels: np.ndarray, segment: Segment, segments: Sequence[Segment]) -> np.ndarray:
    """The full mask of ``segment``: its own label and those of the segments it contains."""
    inner = contained_labels(segment, segments)
    own = labels == segment.label
    return own | np.isin(labels, inner) if inner else own


class SegmentMasks(Mapping[str, np.ndarray]):
    """Name -> full mask of every segment, each built when asked for (20 full-size masks at once need GBs)."""

    def __init__(self, labels: np.ndarray, segments: Sequence[Segment]) -> None:
        self.labels, self.segments = labels, list(segments)
        self._by_name = {s.name: s for s in self.segments}

    def __getitem__(self, name: str) -> np.ndarray:
        return segment_mask(self.labels, self._by_name[name], self.segments)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


def has_containers(segments: Sequence[Segment]) -> bool:
    """Whether some segment contains another segment of the list."""
    return any(contained_labels(s, segments) for s in segments)


def paint_order(segments: Sequence[Segment]) -> list[int]:
    """Indices of ``segments`` with every container before the segments inside it (else the given order), so that
    painting full masks in this order onto one label map gives back the one-label-per-voxel map."""
    depth = {s.name: len(contained_labels(s, segments)) for s in segments}
    return sorted(range(len(segments)), key=lambda n: -depth[segments[n].name])


def layers(labels: np.ndarray, segments: Sequence[Segment]) -> list[tuple[np.ndarray, list[Segment]]]:
    """The segments spread over label layers in which no two overlap: layer 0 is ``labels`` without the
    containers' own voxels; each container goes at its full extent to the first later layer it does not overlap."""
    containers = [s for s in segments if contained_labels(s, segments)]
    names = {s.name for s in containers}
    first = np.where(np.isin(labels, [s.label for s in containers]), 0, labels).astype(labels.dtype)
    out: list[tuple[np.ndarray, list[Segment]]] = [(first, [s for s in segments if s.name not in names])]
    for segment in containers:
        mask = segment_mask(labels, segment, segments)
        for layer, members in out[1:]:
            if not np.any(layer[mask]):
                layer[mask] = segment.label
                members.append(segment)
                break
        else:
            layer = np.zeros_like(labels)
            layer[mask] = segment.label
            out.append((layer, [segment]))
    return out
