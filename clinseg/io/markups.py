"""Slicer markups JSON (``.mrk.json``) for centerlines and routes.

Coordinates are written in LPS (``coordinateSystem: LPS``), as Slicer itself
writes them; the per-point lumen radius goes into a ``Radius`` measurement with
``controlPointValues``, which Slicer reads back as curve point data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..result import Curve
from .atomic import atomic_write

SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)


def _markup(curve: Curve, color: tuple[float, float, float]) -> dict:
    points = np.asarray(curve.points, dtype=float)
    control_points = [
        {"id": str(n + 1), "label": f"{curve.name}-{n + 1}", "position": [round(float(v), 4) for v in p],
         "positionStatus": "defined", "visibility": False}
        for n, p in enumerate(points)
    ]
    markup = {
        "type": "Curve",
        "name": curve.name,
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "locked": True,
        "labelFormat": "%N-%d",
        "controlPoints": control_points,
        "measurements": [{"name": "length", "enabled": True, "units": "mm", "printFormat": "%-#4.4g%s"}],
        "display": {"visibility": True, "color": list(color), "selectedColor": list(color), "glyphScale": 1.0,
                    "pointLabelsVisibility": False, "propertiesLabelVisibility": False, "lineThickness": 0.3},
        # Not part of Slicer's schema: our tree links and attributes; Slicer ignores unknown keys.
        "clinseg": {"parent": curve.parent, **{k: _plain(v) for k, v in curve.attributes.items()}},
    }
    if curve.radii is not None:
        markup["measurements"].append({
            # enabled: Slicer then also interpolates the radius onto the curve's own points.
            "name": "Radius", "enabled": True, "units": "mm", "printFormat": "%-#4.4g%s",
            "controlPointValues": [round(float(r), 4) for r in curve.radii],
        })
    return markup


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write_curves(path: str | Path, curves: list[Curve], color: tuple[float, float, float] = (0.2, 0.6, 1.0)) -> Path:
    """All curves in one ``.mrk.json`` file (Slicer loads each as a curve node)."""
    document = {"@schema": SCHEMA, "markups": [_markup(c, color) for c in curves]}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(document, indent=1))
    return Path(path)


def read_curves(path: str | Path) -> list[Curve]:
    """Curves from a ``.mrk.json`` (ours or Slicer's), points in LPS, radius when present."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(path.name, f"is not a readable markups JSON file ({error})") from error
    curves = []
    for markup in document.get("markups", []):
        points = np.array([p["position"] for p in markup.get("controlPoints", [])], dtype=float).reshape(-1, 3)
        if markup.get("coordinateSystem", "LPS") == "RAS":
            points[:, :2] *= -1
        radii = None
        for measurement in markup.get("measurements", []):
            if measurement.get("name") == "Radius" and measurement.get("controlPointValues"):
                radii = np.asarray(measurement["controlPointValues"], dtype=float)
        extra = dict(markup.get("clinseg", {}))
        parent = extra.pop("parent", None)
        default_name = path.name.removesuffix(".json").removesuffix(".mrk")
        curves.append(Curve(markup.get("name", default_name), points, radii, parent, extra))
    return curves
