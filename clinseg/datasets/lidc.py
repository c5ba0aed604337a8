"""LIDC-IDRI reader XML: every radiologist's nodule outlines as masks on the CT's DICOM grid.

One XML file (``LidcReadMessage``) holds up to four ``readingSession`` elements,
one per radiologist. Each session lists

* ``unblindedReadNodule`` with ``characteristics``: a nodule >= 3 mm, outlined
  slice by slice (``roi``: ``imageZposition``, ``inclusion``, ``edgeMap`` points
  in pixel column ``xCoord`` / row ``yCoord``);
* ``unblindedReadNodule`` without characteristics: a nodule < 3 mm, marked by
  its centre only (one ``edgeMap`` point per ``roi``);
* ``nonNodule``: a finding judged not to be a nodule, marked by one ``locus``.

A contour is filled like the LIDC outlines are meant: every pixel inside the
polygon *and* the contour pixels themselves belong to the nodule; an
``inclusion=FALSE`` contour cuts out a hole. ``roi`` slices are matched to the
CT by their z position (never by SOP UID, which anonymised copies rewrite).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume, label_of

CHARACTERISTICS = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)


@dataclass(frozen=True)
class Roi:
    """One outline on one slice: ``points`` are ``(x, y)`` = (column, row) pixel indices."""

    z_mm: float
    sop_uid: str
    inclusion: bool
    points: np.ndarray


@dataclass(frozen=True)
class ReaderNodule:
    """One reader's annotation of one nodule (>= 3 mm: outlined; < 3 mm: centre points only)."""

    reader: str
    nodule_id: str
    rois: tuple[Roi, ...]
    characteristics: dict[str, int] = field(default_factory=dict)

    @property
    def small(self) -> bool:
        """A < 3 mm nodule: LIDC records no characteristics and only a centre point for it."""
        return not self.characteristics

    @property
    def z_range(self) -> tuple[float, float]:
        zs = [roi.z_mm for roi in self.rois]
        return min(zs), max(zs)

    def centroid_xyz(self) -> np.ndarray:
        """Mean of the contour points as ``(x_pixel, y_pixel, z_mm)`` (for grouping across readers)."""
        pts = [np.column_stack([r.points, np.full(len(r.points), r.z_mm)]) for r in self.rois if r.inclusion]
        return np.concatenate(pts).mean(axis=0)


@dataclass(frozen=True)
class NonNodule:
    """A reader's "not a nodule" mark: one pixel ``(x, y)`` on the slice at ``z_mm``."""

    reader: str
    nodule_id: str
    z_mm: float
    sop_uid: str
    xy: tuple[int, int]


@dataclass
class LidcReading:
    """All reading sessions of one XML file."""

    series_uid: str
    study_uid: str
    readers: list[str]
    nodules: list[ReaderNodule]  # >= 3 mm, outlined
    small_nodules: list[ReaderNodule]  # < 3 mm, centre only
    non_nodules: list[NonNodule]

    def by_reader(self) -> dict[str, list[ReaderNodule]]:
        out: dict[str, list[ReaderNodule]] = {r: [] for r in self.readers}
        for nodule in self.nodules:
            out[nodule.reader].append(nodule)
        return out


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: ET.Element, name: str, default: str = "") -> str:
    child = _child(element, name)
    return default if child is None or child.text is None else child.text.strip()


def _points(element: ET.Element, name: str) -> np.ndarray:
    pts = [(int(float(_text(e, "xCoord"))), int(float(_text(e, "yCoord")))) for e in _children(element, name)]
    return np.array(pts, dtype=int).reshape(-1, 2)


def _roi(element: ET.Element) -> Roi:
    return Roi(
        z_mm=float(_text(element, "imageZposition")),
        sop_uid=_text(element, "imageSOP_UID"),
        inclusion=_text(element, "inclusion", "TRUE").upper() != "FALSE",
        points=_points(element, "edgeMap"),
    )


def parse_lidc_xml(path: str | Path) -> LidcReading:
    """Parse one LIDC ``LidcReadMessage`` XML file into per-reader nodules, small nodules and non-nodules."""
    path = Path(path)
    subject = label_of(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise InputError(subject, f"is not readable XML: {error}") from None
    if _local(root.tag) != "LidcReadMessage":
        raise InputError(subject, f"is not an LIDC read message (root element '{_local(root.tag)}')")
    header = _child(root, "ResponseHeader")
    series_uid = _text(header, "SeriesInstanceUid") if header is not None else ""
    study_uid = _text(header, "StudyInstanceUID") if header is not None else ""
    readers, nodules, small, non_nodules = [], [], [], []
    for n, session in enumerate(_children(root, "readingSession")):
        # Anonymised files may share one placeholder ID: keep each session distinct.
        reader = _text(session, "servicingRadiologistID") or f"reader{n + 1}"
        if reader in readers:
            reader = f"{reader}#{n + 1}"
        readers.append(reader)
        for element in _children(session, "unblindedReadNodule"):
            chars = _child(element, "characteristics")
            characteristics = {}
            if chars is not None:
                for child in chars:
                    value = (child.text or "").strip()
                    if value.lstrip("-").isdigit():
                        characteristics[_local(child.tag)] = int(value)
            rois = tuple(_roi(r) for r in _children(element, "roi"))
            if not rois:
                continue
            nodule = ReaderNodule(reader, _text(element, "noduleID"), rois, characteristics)
            (small if nodule.small else nodules).append(nodule)
        for element in _children(session, "nonNodule"):
            locus = _points(element, "locus")
            xy = (int(locus[0, 0]), int(locus[0, 1])) if len(locus) else (-1, -1)
            non_nodules.append(
                NonNodule(reader, _text(element, "nonNoduleID"), float(_text(element, "imageZposition")),
                          _text(element, "imageSOP_UID"), xy)
            )
    if not readers:
        raise InputError(subject, "holds no readingSession")
    return LidcReading(series_uid, study_uid, readers, nodules, small, non_nodules)


def _perimeter(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The contour's own pixels: its points joined by pixel lines (closed)."""
    from skimage.draw import polygon_perimeter

    out = np.zeros(shape, dtype=bool)
    rr, cc = polygon_perimeter(points[:, 1].astype(float), points[:, 0].astype(float), shape, clip=False)
    ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
    out[rr[ok], cc[ok]] = True
    return out


def fill_contour(points: np.ndarray, shape: tuple[int, int], boundary: bool = True) -> np.ndarray:
    """Boolean ``[row, col]`` mask of a closed pixel contour: its inside plus (``boundary``) or minus its outline."""
    from skimage.draw import polygon

    mask = np.zeros(shape, dtype=bool)
    if len(points) == 0:
        return mask
    if len(points) >= 3:
        rr, cc = polygon(points[:, 1].astype(float), points[:, 0].astype(float), shape)
        mask[rr, cc] = True
    outline = _perimeter(points, shape)
    return mask | outline if boundary else mask & ~outline


def slice_positions(ct: Volume) -> np.ndarray:
    """z (LPS mm) of every slice ``k`` of an axial CT, as LIDC's ``imageZposition`` gives it."""
    ks = np.arange(ct.shape[0], dtype=float)
    return ct.index_to_physical(np.column_stack([np.zeros_like(ks), np.zeros_like(ks), ks]))[:, 2]


def match_slice(z_mm: float, positions: np.ndarray) -> int | None:
    """Index of the slice at ``z_mm`` (within a third of the slice spacing), else ``None`` (outside the series)."""
    step = float(np.median(np.abs(np.diff(positions)))) if len(positions) > 1 else 1.0
    k = int(np.argmin(np.abs(positions - z_mm)))
    return k if abs(positions[k] - z_mm) <= step / 3 else None


def nodule_mask(nodule: ReaderNodule, ct: Volume, positions: np.ndarray | None = None) -> np.ndarray:
    """Boolean ``[k, j, i]`` mask of one reader's nodule on the CT grid (rois off the series are dropped)."""
    positions = slice_positions(ct) if positions is None else positions
    mask = np.zeros(ct.shape, dtype=bool)
    plane = ct.shape[1:]
    # Inclusions first, then holes, per slice (a hole's outline stays in the nodule: it is the nodule's inner edge).
    for inclusion in (True, False):
        for roi in nodule.rois:
            if roi.inclusion != inclusion:
                continue
            k = match_slice(roi.z_mm, positions)
            if k is None:
                continue
            if inclusion:
                mask[k] |= fill_contour(roi.points, plane, boundary=True)
            else:
                mask[k] &= ~fill_contour(roi.points, plane, boundary=False)
    return mask


def reader_masks(reading: LidcReading, ct: Volume) -> dict[str, np.ndarray]:
    """Per reader: union of that reader's >= 3 mm nodule masks on the CT grid (``[k, j, i]`` bool)."""
    positions = slice_positions(ct)
    out = {}
    for reader, nodules in reading.by_reader().items():
        mask = np.zeros(ct.shape, dtype=bool)
        for nodule in nodules:
            mask |= nodule_mask(nodule, ct, positions)
        out[reader] = mask
    return out


def reader_count_map(reading: LidcReading, ct: Volume) -> Volume:
    """Voxel value = number of readers whose >= 3 mm nodule outline covers it (0 to 4), on the CT grid."""
    masks = reader_masks(reading, ct)
    count = np.zeros(ct.shape, dtype=np.uint8)
    for mask in masks.values():
        count += mask.astype(np.uint8)
    return ct.with_array(count, name="reader_count")


def consensus_mask(count: Volume, level: int) -> Volume:
    """Voxels at least ``level`` readers agree on (e.g. 3 of 4, the usual LIDC consensus)."""
    if level < 1:
        raise InputError("level", f"consensus level must be >= 1, got {level}")
    return count.with_array((count.array >= level).astype(np.uint8), name=f"consensus{level}")


def group_nodules(nodules: list[ReaderNodule], pixel_mm: float, distance_mm: float = 10.0) -> list[list[ReaderNodule]]:
    """Cluster readers' annotations of the same physical nodule: centroids closer than ``distance_mm``.

    A reader contributes at most one annotation to a group (single-link, nearest first).
    """
    centres = [n.centroid_xyz() * np.array([pixel_mm, pixel_mm, 1.0]) for n in nodules]
    groups: list[list[int]] = []
    for idx in np.argsort([c[2] for c in centres]):
        best, best_d = None, distance_mm
        for g, members in enumerate(groups):
            if any(nodules[m].reader == nodules[idx].reader for m in members):
                continue
            d = min(float(np.linalg.norm(centres[idx] - centres[m])) for m in members)
            if d < best_d:
                best, best_d = g, d
        if best is None:
            groups.append([int(idx)])
        else:
            groups[best].append(int(idx))
    return [[nodules[m] for m in members] for members in groups]


@dataclass
class ReadNodule:
    """One physical nodule as its readers outlined it (one annotation per reader, see :func:`group_nodules`).

    Its size is the readers' mean of each reader's Lung-RADS mean axial diameter: (long + short axis) / 2 on
    the axial plane where that reader's outline is largest, measured on the filled outline (contour pixels
    included) by :func:`clinseg.post.nodules.measure_nodules`, as NoduleSeg measures its own masks. LIDC
    records no diameter; on a slab that covers the nodule in part, only the covered slices count.
    """

    annotations: list[ReaderNodule]
    masks: list[np.ndarray]  # bool [k, j, i], one per annotation
    centres_lps: np.ndarray  # (n, 3)
    long_mm: np.ndarray
    short_mm: np.ndarray

    @property
    def readers(self) -> int:
        return len({a.reader for a in self.annotations})

    @property
    def center_lps(self) -> np.ndarray:
        return self.centres_lps.mean(axis=0)

    @property
    def diameters_mm(self) -> np.ndarray:
        return (self.long_mm + self.short_mm) / 2

    @property
    def mean_diameter_mm(self) -> float:
        return float(self.diameters_mm.mean())

    def agreement(self, level: int) -> np.ndarray:
        """bool ``[k, j, i]``: voxels at least ``level`` of this nodule's readers outlined."""
        return np.sum(self.masks, axis=0) >= level


def read_nodules(case: LidcCase, distance_mm: float = 10.0) -> list[ReadNodule]:
    """The case's >= 3 mm nodules with at least one outlined slice on the CT, readers' annotations grouped."""
    from ..post.nodules import measure_nodules

    ct = case.ct
    positions = slice_positions(ct)
    out = []
    for group in group_nodules(case.reading.nodules, pixel_mm=float(ct.spacing[0]), distance_mm=distance_mm):
        kept, masks, measured = [], [], []
        for annotation in group:
            mask = nodule_mask(annotation, ct, positions)
            if mask.any():
                kept.append(annotation)
                masks.append(mask)
                measured.append(measure_nodules(ct.with_array(mask.view(np.uint8), "reader"))[0])
        if kept:
            out.append(ReadNodule(kept, masks, np.array([m.center_lps for m in measured]),
                                  np.array([m.axes.long_mm for m in measured]),
                                  np.array([m.axes.short_mm for m in measured])))
    return out


@dataclass
class LidcCase:
    """One LIDC-IDRI scan: the CT and its reading."""

    ct: Volume
    reading: LidcReading

    def reader_masks(self) -> dict[str, np.ndarray]:
        return reader_masks(self.reading, self.ct)

    def reader_count(self) -> Volume:
        return reader_count_map(self.reading, self.ct)


def read_lidc_case(folder: str | Path, xml_path: str | Path | None = None) -> LidcCase:
    """Read a case folder: the DICOM series (``dicom/`` or the folder itself) and its reader XML.

    Without ``xml_path`` the first ``*.xml`` under the folder whose series UID matches is used.
    """
    from ..io import read_dicom_series

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(label_of(folder), "is not a folder")
    dicom = folder / "dicom" if (folder / "dicom").is_dir() else folder
    ct = read_dicom_series(dicom)
    if xml_path is None:
        candidates = sorted(folder.rglob("*.xml"))
        readings = []
        for candidate in candidates:
            try:
                readings.append(parse_lidc_xml(candidate))
            except InputError:
                continue
        if not readings:
            raise InputError(label_of(folder), "holds no LIDC reader XML file")
        series_uid = _series_uid(dicom)
        matching = [r for r in readings if r.series_uid == series_uid] or readings
        reading = matching[0]
    else:
        reading = parse_lidc_xml(xml_path)
    return LidcCase(ct, reading)


def _series_uid(folder: Path) -> str:
    from ..io import list_series

    found = list_series(folder)
    return found[0].uid if found else ""
