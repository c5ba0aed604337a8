"""PNG previews of an airway result: orthogonal overlays and the 3-D centerline tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...gallery import render_orthogonal
from ...result import Result
from ...volume import Volume


def _route(result: Result):
    return next((c for c in result.curves if c.attributes.get("group") == "route"), None)


def render_tree(result: Result, path: Path) -> Path:
    """Centerlines coloured by generation, named branches labelled, the route in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tree = [c for c in result.curves if c.attributes.get("group") == "centerlines"]
    fig = plt.figure(figsize=(7, 8), dpi=90)
    ax = fig.add_subplot(projection="3d")
    cmap = plt.get_cmap("turbo")
    top = max((c.attributes.get("generation", 0) for c in tree), default=1) or 1
    for curve in tree:
        p, generation = curve.points, curve.attributes.get("generation", 0)
        width = 0.5 + 2.5 * float(np.mean(curve.radii)) / 8.0 if curve.radii is not None else 1.0
        ax.plot(p[:, 0], p[:, 1], p[:, 2], color=cmap(generation / top), linewidth=width)
        name = curve.attributes.get("anatomical_name")
        if name:
            mid = p[len(p) // 2]
            ax.text(mid[0], mid[1], mid[2], name.replace("Bronchus", "B."), fontsize=6)
    route = _route(result)
    if route is not None:
        p = route.points
        ax.plot(p[:, 0], p[:, 1], p[:, 2], color="red", linewidth=2.5)
        target = route.attributes.get("target_lps")
        if target is not None:
            ax.scatter([target[0]], [target[1]], [target[2]], color="red", s=40, marker="*")
    ax.view_init(elev=8, azim=-90)  # anterior view: patient's right on the viewer's left
    ax.set_xlabel("x (L)")
    ax.set_ylabel("y (P)")
    ax.set_zlabel("z (S)")
    stats = result.metrics.get("tree", {})
    ax.set_title(f"{stats.get('branches', len(tree))} branches, up to generation {stats.get('max_generation', '?')}")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def render_airway_preview(result: Result, folder: Path, ct: Volume | None = None) -> list[Path]:
    """``preview.png`` (CT with the airway outline through the carina or route end) and ``tree3d.png``."""
    folder = Path(folder)
    paths = [render_tree(result, folder / "tree3d.png")]
    if ct is not None and result.labelmap is not None:
        route = _route(result)
        centre = route.points[-1] if route is not None else _carina(result)
        render_orthogonal(ct, {"airway": result.labelmap}, folder / "preview.png", point_lps=centre,
                          title="AirwaySeg")
        paths.append(folder / "preview.png")
    return paths


def _carina(result: Result) -> np.ndarray | None:
    trachea = next((c for c in result.curves if c.attributes.get("anatomical_name") == "Trachea"), None)
    return None if trachea is None else trachea.points[-1]
