from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from clinseg.shared import shared_dir

# Two cores on CI: keep torch from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder with real sample data; skips the test when it is absent."""
    path = shared_dir()
    if path is None:
        pytest.skip("../shared (real sample data) is absent")
    return path


@pytest.fixture
def clinseg_home(tmp_path, monkeypatch) -> Path:
    """An empty model cache for one test (CLINSEG_HOME)."""
    home = tmp_path / "clinseg-home"
    monkeypatch.setenv("CLINSEG_HOME", str(home))
    return home
