"""The one image type of ClinicalSeg and its coordinate convention.

Convention (used everywhere in ``clinseg``; documented only here):

* ``array`` is indexed ``[k, j, i]`` (slice, row, column), exactly as
  ``SimpleITK.GetArrayFromImage`` and Slicer's ``arrayFromVolume`` return it.
* ``spacing`` is ``(si, sj, sk)`` in millimetres, in the order of the
  ``i, j, k`` axes (ITK order), not of the array axes.
* ``origin`` is the physical position of voxel ``(i, j, k) = (0, 0, 0)`` in
  **LPS** millimetres (the DICOM / ITK patient frame).
* ``direction`` is a 3x3 matrix whose *columns* are the unit vectors of the
  ``i, j, k`` axes in LPS.

So ``lps = origin + direction @ (spacing * [i, j, k])``. Slicer works in RAS;
``ijk_to_ras`` flips the first two rows, which is the only place the two
frames meet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """Voxels plus the geometry that places them in the patient (LPS, mm)."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    name: str = ""

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)

    # --- geometry -----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(nk, nj, ni)``."""
        return tuple(self.array.shape[:3])

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Grid size in ``i, j, k`` order (as ITK and Slicer report it)."""
        nk, nj, ni = self.shape
        return ni, nj, nk

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping ``(i, j, k, 1)`` to LPS millimetres."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix Slicer expects in ``vtkMRMLVolumeNode.SetIJKToRASMatrix``."""
        m = self.ijk_to_lps()
        m[:3, :] = LPS_TO_RAS @ m[:3, :]
        return m

    def index_to_physical(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous ``(..., 3)`` indices in ``i, j, k`` order to LPS mm."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction @ np.diag(self.spacing)).T + np.asarray(self.origin)

    def physical_to_index(self, lps: np.ndarray) -> np.ndarray:
        """LPS mm ``(..., 3)`` to continuous indices in ``i, j, k`` order."""
        inv = np.linalg.inv(self.direction @ np.diag(self.spacing))
        return (np.asarray(lps, dtype=float) - np.asarray(self.origin)) @ inv.T

    def with_array(self, array: np.ndarray, name: str | None = None) -> Volume:
        """Same geometry, other voxels (e.g. a label map on the image's grid)."""
        if tuple(array.shape[:3]) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match volume shape {self.shape}")
        return Volume(array, self.spacing, self.origin, self.direction.copy(), self.name if name is None else name)

    def same_grid(self, other: Volume, tol: float = 1e-4) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol * 10)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    # --- SimpleITK ----------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image, name: str = "") -> Volume:
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise ValueError(f"{name or 'image'}: expected a 3-D image, got {image.GetDimension()}-D")
        return cls(
            sitk.GetArrayFromImage(image),
            image.GetSpacing(),
            image.GetOrigin(),
            np.array(image.GetDirection()).reshape(3, 3),
            name,
        )

    def to_sitk(self):
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array), isVector=self.array.ndim == 4)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(self.direction.ravel()))
        return image

    @classmethod
    def from_ras_matrix(cls, array: np.ndarray, ijk_to_ras: np.ndarray, name: str = "") -> Volume:
        """Build from a voxel array and a Slicer IJK-to-RAS 4x4 matrix."""
        m = np.asarray(ijk_to_ras, dtype=float).copy()
        m[:3, :] = LPS_TO_RAS @ m[:3, :]
        spacing = np.linalg.norm(m[:3, :3], axis=0)
        return cls(array, tuple(spacing), tuple(m[:3, 3]), m[:3, :3] / spacing, name)


def label_of(path: str | Path) -> str:
    """Short display name of an input (for one-line error messages)."""
    return Path(path).name or str(path)
