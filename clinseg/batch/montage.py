"""One small QC image per case: the tasks' preview PNGs side by side, each scaled to the same height."""

from __future__ import annotations

from pathlib import Path

PANEL_HEIGHT = 220  # pixels; a report of thousands of cases stays light


def write_montage(images: list[Path], path: Path, height: int = PANEL_HEIGHT) -> Path | None:
    """``images`` left to right in one PNG at ``path``; None when there is nothing to show."""
    from PIL import Image

    panels = []
    for image in images:
        with Image.open(image) as im:
            rgb = im.convert("RGB")
        width = max(1, round(rgb.width * height / rgb.height))
        panels.append(rgb.resize((width, height), Image.Resampling.LANCZOS))
    if not panels:
        return None
    sheet = Image.new("RGB", (sum(p.width for p in panels) + 4 * (len(panels) - 1), height), "white")
    x = 0
    for panel in panels:
        sheet.paste(panel, (x, 0))
        x += panel.width + 4
    sheet.save(path, optimize=True)
    return path
