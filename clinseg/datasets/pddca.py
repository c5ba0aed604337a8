"""MICCAI 2015 head & neck challenge (PDDCA) layout: ``<case>/img.nrrd`` and ``<case>/structures/<Name>.nrrd``.

Structure names (``BrainStem``, ``Chiasm``, ``Mandible``, ``OpticNerve_L/R``, ``Parotid_L/R``,
``Submandible_L/R``) map to our organ names; organs PDDCA lacks (eyes...) are written as ``Eye_L`` etc.
The challenge's ``points/`` landmark folder is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import read_volume, write_volume
from ..phantoms.hn_anatomy import canonical_organ_name
from ..volume import Volume, label_of

PDDCA_NAMES: dict[str, str] = {
    "Brainstem": "BrainStem", "Optic chiasm": "Chiasm", "Mandible": "Mandible",
    "Optic nerve L": "OpticNerve_L", "Optic nerve R": "OpticNerve_R", "Parotid L": "Parotid_L",
    "Parotid R": "Parotid_R", "Submandibular L": "Submandible_L", "Submandibular R": "Submandible_R",
}


@dataclass
class PddcaCase:
    name: str
    image: Volume
    structures: dict[str, Volume] = field(default_factory=dict)  # our organ name -> uint8 mask


def list_pddca(root: str | Path) -> list[Path]:
    """Case folders (those holding ``img.nrrd``) under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(label_of(root), "folder not found")
    return sorted(p for p in root.iterdir() if (p / "img.nrrd").is_file())


def read_pddca_case(folder: str | Path, load_image: bool = True) -> PddcaCase:
    """Image and every structure of one case; masks are checked to lie on the image grid."""
    folder = Path(folder)
    img_path = folder / "img.nrrd"
    if not img_path.is_file():
        raise InputError(label_of(folder), "no img.nrrd (not a PDDCA case folder)")
    image = read_volume(img_path) if load_image else None
    case = PddcaCase(folder.name, image)  # type: ignore[arg-type]
    for path in sorted((folder / "structures").glob("*.nrrd")):
        organ = canonical_organ_name(path.name[: -len(".nrrd")])
        if organ is None:
            continue
        mask = read_volume(path)
        if image is not None and not mask.same_grid(image):
            raise InputError(path.name, "structure is not on the grid of img.nrrd")
        mask.array = (np.asarray(mask.array) != 0).astype(np.uint8)
        mask.name = organ
        case.structures[organ] = mask
    return case


def write_pddca_case(folder: str | Path, image: Volume, structures: dict[str, Volume]) -> Path:
    """Write ``img.nrrd`` and one NRRD per structure (each write atomic); returns the case folder."""
    folder = Path(folder)
    for name, mask in structures.items():
        if not mask.same_grid(image):
            raise InputError(name, "structure is not on the image grid")
    write_volume(image, folder / "img.nrrd")
    for name, mask in structures.items():
        organ = canonical_organ_name(name) or name
        file_name = PDDCA_NAMES.get(organ, organ.replace(" ", "_"))
        write_volume(mask.with_array((np.asarray(mask.array) != 0).astype(np.uint8)),
                     folder / "structures" / f"{file_name}.nrrd")
    return folder
