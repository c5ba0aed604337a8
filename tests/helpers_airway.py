"""Test helpers shared by the airway network, training and bench-backed tests (not a test module itself)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Small tensors: one thread is faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_bench(name: str, folder: str = "bench") -> ModuleType:
    """The script ``<folder>/<name>.py`` (``bench/`` or ``scripts/``) imported as a module, so a test can reuse or
    check its code. Its folder goes on ``sys.path`` as when the script runs (the benches import ``same_phantoms``)."""
    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
