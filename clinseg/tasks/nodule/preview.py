"""PNG preview of a nodule result: orthogonal slices through the best-scoring nodule, outlines on top."""

from __future__ import annotations

from pathlib import Path

from ...gallery import render_orthogonal
from ...result import Result
from ...volume import Volume


def render_nodule_preview(result: Result, folder: Path, ct: Volume | None = None) -> list[Path]:
    """``preview.png`` through nodule 1 (the best score), or the volume's centre when none was found."""
    if ct is None or result.labelmap is None:
        return []
    table = next((t for t in result.tables if t.name == "nodules"), None)
    point = None
    if table is not None and table.n_rows:
        row = table.rows()[0]
        point = (row["center_lps_x_mm"], row["center_lps_y_mm"], row["center_lps_z_mm"])
    path = Path(folder) / "preview.png"
    title = f"NoduleSeg: {result.metrics.get('message', '')}"
    render_orthogonal(ct, {"nodules": result.labelmap}, path, point_lps=point, title=title)
    return [path]
