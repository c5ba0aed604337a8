"""PNG preview of a stroke result: the primary image through the largest lesion with the lesion outlined."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...gallery import render_orthogonal
from ...result import Result
from ...volume import Volume


def render_stroke_preview(result: Result, folder: Path, image: Volume | None) -> list[Path]:
    """``preview.png``: axial / coronal / sagittal planes through the largest lesion (or the centre)."""
    if image is None or result.labelmap is None:
        return []
    table = next((t for t in result.tables if t.name == "lesions"), None)
    centre = None
    if table is not None and table.n_rows:
        row = table.rows()[0]
        centre = np.array([row["center_lps_x_mm"], row["center_lps_y_mm"], row["center_lps_z_mm"]], float)
    brain = image.array[image.array > 0]
    high = float(np.percentile(brain, 99.5)) if brain.size else 1.0
    path = Path(folder) / "preview.png"
    metrics = result.metrics
    title = f"StrokeSeg ({metrics.get('mode', '')}): {metrics.get('lesion_volume_ml', 0):.1f} ml in " \
            f"{metrics.get('lesion_count', 0)} lesion(s)"
    render_orthogonal(image, {"lesion": result.labelmap}, path, point_lps=centre, window=(0.0, high), title=title)
    return [path]
