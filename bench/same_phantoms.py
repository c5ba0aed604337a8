"""Imported first (before numpy) by every bench that generates phantoms: the same phantoms on every x86-64 CPU.

The phantom generators grow airway and vessel trees step by step, so a last-bit difference in one BLAS dot
product ends in other trees, other nodules and other figures. OpenBLAS (numpy's and scipy's) picks AVX-512
kernels where the CPU has them and AVX2 ones elsewhere, and the two round differently: on an AVX-512 machine the
nodule bench's held-out seeds 200-209 held 53 solid nodules instead of 50 and gave CPM 0.586 instead of the
documented 0.611, which the AVX2 kernels reproduce exactly. OpenBLAS reads its kernel choice once, when it
loads, so the choice is pinned here, before anything imports numpy. A CPU without AVX2, or another BLAS, keeps
its own kernels; its phantoms may differ from the documented ones.
"""

from __future__ import annotations

import os
import platform
import sys

KERNELS = "Haswell"  # OpenBLAS's AVX2 kernels: any x86-64 CPU with AVX2 runs them


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as info:
            return any(line.startswith("flags") and " avx2" in line for line in info)
    except OSError:
        return False


def pinned() -> bool:
    """Whether OpenBLAS runs (or will run, when it loads) the kernels the documented figures were measured with."""
    return os.environ.get("OPENBLAS_CORETYPE") == KERNELS


if "numpy" not in sys.modules and "OPENBLAS_CORETYPE" not in os.environ and platform.machine() in ("x86_64", "AMD64") \
        and _has_avx2():
    os.environ["OPENBLAS_CORETYPE"] = KERNELS
