"""PNG pictures of a volume and its labels (matplotlib, Agg backend; no display needed).

``render_orthogonal`` draws axial, coronal and sagittal slices through a point
with label outlines; ``render_tree_3d`` draws a tree (mask or branch list) in 3-D.
Pictures are shown in radiological convention: patient's right on the image's left.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .volume import Volume

OVERLAY_COLOURS = ("#ffd200", "#ff3030", "#30a0ff", "#40ff60", "#ff60ff", "#ffffff")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    from .io.atomic import atomic_write

    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=fig.dpi, facecolor="black")
    return path


def _lps_slices(volume: Volume, point_ijk: np.ndarray) -> list[tuple[str, tuple, float]]:
    """Axial, coronal and sagittal planes through a voxel: name, array slices, display aspect."""
    arr = volume.array
    i, j, k = (int(round(v)) for v in point_ijk)
    si, sj, sk = volume.spacing
    nk, nj, ni = arr.shape
    i, j, k = min(max(i, 0), ni - 1), min(max(j, 0), nj - 1), min(max(k, 0), nk - 1)
    return [
        ("axial", (slice(k, k + 1), slice(None), slice(None)), sj / si),
        ("coronal", (slice(None), slice(j, j + 1), slice(None)), sk / si),
        ("sagittal", (slice(None), slice(None), slice(i, i + 1)), sk / sj),
    ]


def _plane(arr: np.ndarray, sl, squeeze_axis: int, flip_rows: bool) -> np.ndarray:
    p = np.squeeze(arr[sl], axis=squeeze_axis)
    return p[::-1] if flip_rows else p


def render_orthogonal(ct: Volume, overlays: dict[str, Volume] | Sequence[Volume] | None, path: str | Path,
                      point_lps: np.ndarray | None = None, window: tuple[float, float] = (-1350, 150),
                      title: str = "") -> Path:
    """Axial / coronal / sagittal slices of ``ct`` through ``point_lps`` (default: centre), label outlines on top.

    Assumes a grid roughly aligned with the patient axes (any flips are fine);
    the display is not resampled.
    """
    plt = _pyplot()
    if overlays is None:
        overlays = {}
    if not isinstance(overlays, dict):
        overlays = {v.name or f"label{n}": v for n, v in enumerate(overlays)}
    arr = ct.array.astype(np.float32)
    if point_lps is None:
        ijk = (np.array(ct.size_ijk) - 1) / 2
    else:
        ijk = ct.physical_to_index(np.asarray(point_lps, float)[None])[0]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4), dpi=90)
    fig.patch.set_facecolor("black")
    for ax, (name, sl, aspect) in zip(axes, _lps_slices(ct, ijk)):
        axis = {"axial": 0, "coronal": 1, "sagittal": 2}[name]
        flip = name != "axial"  # rows of coronal / sagittal planes run along k: superior on top
        img = _plane(arr, sl, axis, flip)
        ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, interpolation="nearest")
        for n, (label, vol) in enumerate(overlays.items()):
            lab = _plane(vol.array, sl, axis, flip)
            if lab.any():
                colour = OVERLAY_COLOURS[n % len(OVERLAY_COLOURS)]
                ax.contour(lab > 0, levels=[0.5], colors=[colour], linewidths=0.7)
                ax.plot([], [], color=colour, label=label)
        ax.set_title(name, color="white")
        ax.axis("off")
    if overlays:
        axes[0].legend(loc="lower left", fontsize=7, facecolor="black", labelcolor="white")
    if title:
        fig.suptitle(title, color="white")
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def render_tree_3d(tree: Volume | Sequence, path: str | Path, title: str = "", max_points: int = 60000) -> Path:
    """A 3-D view of an airway tree: a mask's surface voxels as points, or branch centrelines coloured by generation.

    ``tree`` is a label ``Volume`` or a list of objects with ``points_lps`` and
    ``generation`` (e.g. ``clinseg.phantoms.Branch``).
    """
    plt = _pyplot()
    fig = plt.figure(figsize=(7, 8), dpi=90)
    ax = fig.add_subplot(projection="3d")
    if isinstance(tree, Volume):
        from scipy import ndimage

        mask = tree.array > 0
        surface = mask & ~ndimage.binary_erosion(mask)
        kji = np.argwhere(surface)
        if len(kji) > max_points:
            kji = kji[np.random.default_rng(0).choice(len(kji), max_points, replace=False)]
        lps = tree.index_to_physical(kji[:, ::-1].astype(float))
        ax.scatter(lps[:, 0], lps[:, 1], lps[:, 2], s=0.3, c=lps[:, 2], cmap="viridis")
    else:
        gens = [b.generation for b in tree] or [0]
        cmap = plt.get_cmap("turbo")
        for b in tree:
            pts = np.asarray(b.points_lps)
            width = max(0.4, 2.0 * float(getattr(b, "radius_mm", 1.0)) / 3)
            ax.plot(pts[:, 0], pts[:, 1], pts[:, 2], color=cmap(b.generation / max(max(gens), 1)), linewidth=width)
    # LPS: show the patient facing the viewer (anterior = -y towards us), right on the left.
    ax.view_init(elev=8, azim=-90)
    ax.set_xlabel("x (L)")
    ax.set_ylabel("y (P)")
    ax.set_zlabel("z (S)")
    try:
        ax.set_box_aspect(np.ptp(np.array(ax.get_w_lims()).reshape(3, 2), axis=1))
    except (AttributeError, ValueError):
        pass
    if title:
        ax.set_title(title)
    out = _save(fig, path)
    plt.close(fig)
    return out
