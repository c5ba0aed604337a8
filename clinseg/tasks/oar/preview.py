"""``preview.png`` of an OAR result: axial, coronal and sagittal CT slices with every organ filled in its colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...result import Result
from ...volume import Volume

SOFT_TISSUE_WINDOW = (-160.0, 240.0)


def _centre(labels: np.ndarray, values: list[int]) -> np.ndarray:
    """Index (k, j, i) to slice through: the centroid of the first organ present (brainstem first), else centre."""
    for value in values:
        idx = np.argwhere(labels == value)
        if len(idx):
            return idx.mean(0).round().astype(int)
    return (np.array(labels.shape) // 2).astype(int)


def render_oar_preview(result: Result, folder: Path, ct: Volume | None) -> list[Path]:
    """Write ``preview.png`` into ``folder`` (nothing without the CT)."""
    if ct is None or result.labelmap is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = result.labelmap.array
    lut = np.zeros((max([s.label for s in result.segments], default=0) + 1, 4), np.float32)
    for s in result.segments:
        lut[s.label] = (*s.color, 0.45)
    by_name = {s.name: s.label for s in result.segments}
    k, j, i = _centre(labels, [by_name[n] for n in ("Brainstem", "Mandible", "Brain") if n in by_name])
    sx, sy, sz = ct.spacing
    planes = [("axial", ct.array[k], labels[k], sy / sx), ("coronal", ct.array[:, j, :][::-1], labels[:, j, :][::-1],
              sz / sx), ("sagittal", ct.array[:, :, i][::-1], labels[:, :, i][::-1], sz / sy)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4), dpi=90)
    fig.patch.set_facecolor("black")
    for ax, (name, image, lab, aspect) in zip(axes, planes):
        ax.imshow(image, cmap="gray", vmin=SOFT_TISSUE_WINDOW[0], vmax=SOFT_TISSUE_WINDOW[1], aspect=aspect,
                  interpolation="nearest")
        ax.imshow(lut[np.clip(lab, 0, len(lut) - 1)], aspect=aspect, interpolation="nearest")
        ax.set_title(name, color="white")
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=s.color) for s in result.segments]
    fig.legend(handles, [s.name for s in result.segments], loc="lower center", ncol=8, fontsize=7,
               facecolor="black", labelcolor="white", frameon=False)
    fig.suptitle(f"OARSeg: {len(result.segments)} segments", color="white")
    path = Path(folder) / "preview.png"
    fig.savefig(path, facecolor="black", bbox_inches="tight")
    plt.close(fig)
    return [path]
