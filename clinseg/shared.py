"""Where the team's real sample data and third-party weights live (never inside the repo)."""

from __future__ import annotations

import os
from pathlib import Path


def shared_dir() -> Path | None:
    """``$CLINSEG_SHARED`` or ``../shared`` beside the checkout; ``None`` when absent."""
    env = os.environ.get("CLINSEG_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared")
    for path in candidates:
        if path.is_dir():
            return path
    return None
