"""bench/same_phantoms.py: the benches generate the phantoms of the documented figures on every x86-64 CPU."""

from __future__ import annotations

import ast
import importlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
# Held-out bench seed 200 as the documented nodule figures saw it (AVX2 kernels). An AVX-512 CPU's own kernels
# grow other vessels there, and the nodules drawn after them differ (a 4.34 mm and a 12.68 mm one among them).
SEED_200_NODULES = [(3.01, "solid"), (3.05, "solid"), (5.41, "ground-glass"), (3.13, "part-solid"), (3.72, "solid"),
                    (7.61, "ground-glass"), (3.95, "solid"), (14.07, "ground-glass")]
SCRIPT = """
import os, sys
sys.path.insert(0, sys.argv[1])
import same_phantoms  # before numpy, as every bench does
import nodule
print(os.environ.get("OPENBLAS_CORETYPE"))
print([(round(float(n.diameter_mm), 2), n.kind) for n in nodule.phantom(200).nodules])
"""


def _same_phantoms():
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("same_phantoms")
    finally:
        sys.path.remove(str(BENCH))


def test_a_bench_generates_the_documented_held_out_phantom():
    if platform.machine() not in ("x86_64", "AMD64") or not _same_phantoms()._has_avx2():
        pytest.skip("the kernels are pinned on x86-64 CPUs with AVX2 only")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(BENCH)], env=env, capture_output=True, text=True,
                         check=True)
    kernels, nodules = run.stdout.splitlines()[-2:]
    assert kernels == "Haswell"
    assert ast.literal_eval(nodules) == SEED_200_NODULES, "the chest phantom generator changed: the documented " \
        "nodule figures (docs/nodule.md) were measured on other phantoms; re-measure them, then update this list"


def test_too_late_to_pin_once_numpy_is_loaded():
    import numpy  # noqa: F401  (OpenBLAS has chosen its kernels)

    before = os.environ.get("OPENBLAS_CORETYPE")
    sys.modules.pop("same_phantoms", None)
    _same_phantoms()
    assert os.environ.get("OPENBLAS_CORETYPE") == before
