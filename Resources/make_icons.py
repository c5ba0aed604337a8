"""Draw the extension's icons and screenshot placeholder as PNG files (numpy + zlib only).

Run from the repository root: ``python Resources/make_icons.py``. The output is deterministic, so running
it again leaves the tracked PNGs unchanged unless the drawing below changes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIZE = 128
SUPERSAMPLE = 4  # drawn at 4x then averaged down: smooth edges without an imaging library

Color = tuple[float, float, float]
Shape = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x, y) in [0, 1] -> coverage mask


def write_png(path: Path, rgba: np.ndarray) -> None:
    """Write an (H, W, 4) uint8 array as an 8-bit RGBA PNG."""
    height, width, _ = rgba.shape
    raw = b"".join(b"\x00" + rgba[row].tobytes() for row in range(height))  # filter type 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class Canvas:
    """An RGBA float canvas in unit coordinates (x right, y down) with alpha-blended shapes."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        w, h = width * SUPERSAMPLE, height * SUPERSAMPLE
        self.y, self.x = np.mgrid[0:h, 0:w].astype(np.float32)
        self.x = (self.x + 0.5) / w
        self.y = (self.y + 0.5) / h * (height / width)  # keep circles round on wide canvases
        self.rgba = np.zeros((h, w, 4), dtype=np.float32)

    def fill(self, shape: Shape, color: Color, alpha: float = 1.0) -> None:
        mask = shape(self.x, self.y).astype(np.float32) * alpha
        for c in range(3):
            self.rgba[..., c] = self.rgba[..., c] * (1 - mask) + color[c] * mask
        self.rgba[..., 3] = self.rgba[..., 3] * (1 - mask) + mask

    def image(self) -> np.ndarray:
        s = SUPERSAMPLE
        small = self.rgba.reshape(self.height, s, self.width, s, 4).mean(axis=(1, 3))
        return np.clip(np.round(small * 255), 0, 255).astype(np.uint8)


def ellipse(cx: float, cy: float, rx: float, ry: float) -> Shape:
    return lambda x, y: ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def rounded_square(margin: float, radius: float) -> Shape:
    def shape(x, y):
        dx = np.maximum(np.abs(x - 0.5) - (0.5 - margin - radius), 0)
        dy = np.maximum(np.abs(y - 0.5) - (0.5 - margin - radius), 0)
        return dx**2 + dy**2 <= radius**2
    return shape


def segment(x0: float, y0: float, x1: float, y1: float, width: float) -> Shape:
    def shape(x, y):
        vx, vy = x1 - x0, y1 - y0
        t = np.clip(((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy), 0, 1)
        return (x - x0 - t * vx) ** 2 + (y - y0 - t * vy) ** 2 <= (width / 2) ** 2
    return shape


def rectangle(x0: float, y0: float, x1: float, y1: float) -> Shape:
    return lambda x, y: (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


BACKGROUND: Color = (0.13, 0.17, 0.24)


def tree(canvas: Canvas, color: Color, scale: float = 1.0, ox: float = 0.0, oy: float = 0.0) -> None:
    """A bronchial tree: trachea, two main bronchi, then two generations of smaller branches."""
    def seg(a, b, c, d, w):
        canvas.fill(segment(ox + a * scale, oy + b * scale, ox + c * scale, oy + d * scale, w * scale), color)
    seg(0.50, 0.14, 0.50, 0.42, 0.10)
    for side in (-1, 1):
        bx, by = 0.50 + side * 0.16, 0.56
        seg(0.50, 0.42, bx, by, 0.075)
        for tx, ty in ((bx + side * 0.14, by + 0.06), (bx + side * 0.02, by + 0.20)):
            seg(bx, by, tx, ty, 0.05)
            for dx, dy in ((side * 0.09, 0.02), (side * -0.02, 0.11)):
                seg(tx, ty, tx + dx, ty + dy, 0.03)


def airway_icon(c: Canvas) -> None:
    c.fill(rounded_square(0.04, 0.14), BACKGROUND)
    tree(c, (0.55, 0.82, 0.98))


def nodule_icon(c: Canvas) -> None:
    c.fill(rounded_square(0.04, 0.14), BACKGROUND)
    for cx in (0.31, 0.69):
        c.fill(ellipse(cx, 0.52, 0.17, 0.32), (0.93, 0.62, 0.62))
        c.fill(ellipse(cx, 0.52, 0.14, 0.29), (0.35, 0.22, 0.27))
    c.fill(ellipse(0.66, 0.42, 0.075, 0.075), (1.0, 0.84, 0.25))


def oar_icon(c: Canvas) -> None:
    c.fill(rounded_square(0.04, 0.14), BACKGROUND)
    c.fill(ellipse(0.50, 0.50, 0.34, 0.40), (0.85, 0.85, 0.80))
    c.fill(ellipse(0.50, 0.50, 0.30, 0.36), (0.40, 0.40, 0.42))
    for side in (-1, 1):
        c.fill(ellipse(0.50 + side * 0.14, 0.27, 0.07, 0.07), (0.45, 0.85, 0.45))  # eyes
        c.fill(ellipse(0.50 + side * 0.21, 0.60, 0.06, 0.10), (0.30, 0.65, 1.00))  # parotids
    c.fill(ellipse(0.50, 0.62, 0.07, 0.09), (0.95, 0.55, 0.20))  # brainstem
    c.fill(segment(0.36, 0.80, 0.64, 0.80, 0.05), (0.95, 0.90, 0.55))  # mandible


def stroke_icon(c: Canvas) -> None:
    c.fill(rounded_square(0.04, 0.14), BACKGROUND)
    c.fill(ellipse(0.50, 0.50, 0.32, 0.39), (0.78, 0.78, 0.80))
    c.fill(segment(0.50, 0.13, 0.50, 0.87, 0.02), BACKGROUND)  # interhemispheric fissure
    for side in (-1, 1):
        c.fill(ellipse(0.50 + side * 0.07, 0.50, 0.04, 0.12), (0.35, 0.35, 0.38))  # ventricles
    c.fill(ellipse(0.33, 0.36, 0.09, 0.11), (0.92, 0.18, 0.18))


def extension_icon(c: Canvas) -> None:
    """The four module icons' motifs on one tile: airway tree over a lung-like field."""
    c.fill(rounded_square(0.04, 0.14), BACKGROUND)
    for cx in (0.31, 0.69):
        c.fill(ellipse(cx, 0.55, 0.18, 0.33), (0.30, 0.24, 0.30))
    tree(c, (0.55, 0.82, 0.98), scale=0.9, ox=0.05, oy=0.06)
    c.fill(ellipse(0.78, 0.30, 0.07, 0.07), (1.0, 0.84, 0.25))


def screenshot(c: Canvas) -> None:
    """A schematic Slicer window: module panel, 3D view with the airway tree, three slice views."""
    aspect = c.height / c.width
    c.fill(rectangle(0, 0, 1, aspect), (0.93, 0.93, 0.93))
    c.fill(rectangle(0.01, 0.02, 0.27, aspect - 0.02), (0.98, 0.98, 0.98))
    for k in range(6):
        y = 0.05 + k * 0.055
        c.fill(rectangle(0.03, y, 0.25, y + 0.03), (0.80, 0.84, 0.90) if k != 4 else (0.35, 0.55, 0.85))
    c.fill(rectangle(0.28, 0.02, 0.99, aspect * 0.62), (0.05, 0.06, 0.10))
    tree(c, (0.55, 0.82, 0.98), scale=aspect * 0.55, ox=0.635 - aspect * 0.275, oy=0.03)
    for k, tint in enumerate(((0.85, 0.2, 0.2), (0.9, 0.8, 0.2), (0.3, 0.7, 0.3))):
        x0 = 0.28 + k * 0.2375
        c.fill(rectangle(x0, aspect * 0.63, x0 + 0.2325, aspect - 0.02), (0.02, 0.02, 0.02))
        c.fill(rectangle(x0, aspect * 0.63, x0 + 0.2325, aspect * 0.63 + 0.01), tint)
        c.fill(ellipse(x0 + 0.116, aspect * 0.815, 0.09, aspect * 0.14), (0.45, 0.45, 0.45))
        c.fill(ellipse(x0 + 0.116, aspect * 0.80, 0.012, 0.012), (0.55, 0.82, 0.98))


DRAWINGS: dict[str, tuple[Callable[[Canvas], None], tuple[int, int]]] = {
    "AirwaySeg/Resources/Icons/AirwaySeg.png": (airway_icon, (SIZE, SIZE)),
    "NoduleSeg/Resources/Icons/NoduleSeg.png": (nodule_icon, (SIZE, SIZE)),
    "OARSeg/Resources/Icons/OARSeg.png": (oar_icon, (SIZE, SIZE)),
    "StrokeSeg/Resources/Icons/StrokeSeg.png": (stroke_icon, (SIZE, SIZE)),
    "Resources/Icons/ClinicalSeg.png": (extension_icon, (SIZE, SIZE)),
    "Resources/Screenshots/ClinicalSeg.png": (screenshot, (640, 400)),
}


def main() -> None:
    for relative, (draw, (width, height)) in DRAWINGS.items():
        canvas = Canvas(width, height)
        draw(canvas)
        write_png(ROOT / relative, canvas.image())
        print(relative)


if __name__ == "__main__":
    main()
