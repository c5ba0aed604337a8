"""Install what ClinicalSeg needs into Slicer's Python, asking the user first.

PyTorch comes through the PyTorch extension (``PyTorchUtils``), which picks a CPU or CUDA build that
matches the driver. The other packages come from the pins in ``requirements.txt`` via
``slicer.util.pip_install``. Packages Slicer ships itself (numpy, SimpleITK, requests) are never
installed or replaced: a second copy would break Slicer.

The decision of what to install is pure Python (``missing_requirements``) and tested without Slicer;
``ensureDependencies`` is the Slicer-side entry point.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# Shipped by Slicer: replacing them from pip breaks the application.
PROTECTED_PACKAGES = frozenset({"numpy", "simpleitk", "requests"})

# Distribution name -> import name, for every package the extension installs besides torch.
EXTENSION_PACKAGES: dict[str, str] = {
    "safetensors": "safetensors",
    "pynrrd": "nrrd",
    "pydicom": "pydicom",
    "psutil": "psutil",
    "scipy": "scipy",
    "scikit-image": "skimage",
    "connected-components-3d": "cc3d",
    "edt": "edt",
    "fill-voids": "fill_voids",
}

# A range, not the exact pin: any torch from 2.1 on runs the models, and PyTorchUtils picks the build
# (CPU or CUDA) that matches this machine. Kept equal to the range in pyproject.toml (tested).
TORCH_REQUIREMENT = ">=2.1"

# Choices offered before installing torch -> PyTorchUtils' ``forceComputationBackend``.
TORCH_BACKEND_CHOICES: dict[str, str | None] = {
    "Automatic (CUDA build when an NVIDIA GPU is found, otherwise CPU)": None,
    "CPU only": "cpu",
}

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")


@dataclass(frozen=True)
class Requirement:
    """One pinned package: distribution name, import name and exact version."""

    name: str
    module: str
    version: str

    @property
    def specifier(self) -> str:
        return f"{self.name}=={self.version}"


def normalize_name(name: str) -> str:
    """PEP 503 normalisation: ``Fill_Voids`` -> ``fill-voids``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_file() -> Path:
    """The pins file: installed next to this package in Slicer, at the repository root in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "requirements.txt", here.parent.parent / "requirements.txt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"requirements.txt not found next to {here} nor at the repository root")


def read_pins(path: str | Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file -> {normalised name: version}."""
    pins: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            pins[normalize_name(match.group(1))] = match.group(2)
    return pins


def pinned_requirements(pins: dict[str, str], packages: dict[str, str] | None = None) -> list[Requirement]:
    """The extension's packages with their pins; protected packages are dropped even if listed."""
    packages = EXTENSION_PACKAGES if packages is None else packages
    requirements = []
    for name, module in packages.items():
        key = normalize_name(name)
        if key in PROTECTED_PACKAGES:
            continue
        if key not in pins:
            raise KeyError(f"requirements.txt has no pin for {name}")
        requirements.append(Requirement(name, module, pins[key]))
    return requirements


def is_importable(module: str) -> bool:
    """True when ``module`` can be imported (found on sys.path), without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_requirements(requirements: Iterable[Requirement],
                         importable: Callable[[str], bool] = is_importable) -> list[Requirement]:
    """Requirements whose module cannot be imported, never a protected package.

    A package that imports is left alone even when its version differs from the pin: inside Slicer
    another extension may rely on the version it installed.
    """
    return [r for r in requirements
            if normalize_name(r.name) not in PROTECTED_PACKAGES and not importable(r.module)]


def pip_arguments(requirements: Iterable[Requirement]) -> list[str]:
    """``name==version`` specifiers for pip, protected packages filtered out once more (defence in depth)."""
    return [r.specifier for r in requirements if normalize_name(r.name) not in PROTECTED_PACKAGES]


def torch_backend(choice: str) -> str | None:
    """The PyTorchUtils computation backend for a dialog choice (``None`` = automatic)."""
    if choice not in TORCH_BACKEND_CHOICES:
        raise ValueError(f"unknown PyTorch build choice: {choice!r}")
    return TORCH_BACKEND_CHOICES[choice]


# -- Slicer side ---------------------------------------------------------------------------------
class DependencyError(RuntimeError):
    """Dependencies are missing and were not installed (user declined or installation failed)."""


def ensureTorch(askConfirmation: bool = True) -> None:
    """Make ``torch`` importable, installing it through the PyTorch extension if needed."""
    if is_importable("torch"):
        return
    import qt
    import slicer

    try:
        import PyTorchUtils
    except ImportError as error:
        raise DependencyError("ClinicalSeg needs the PyTorch extension: install 'PyTorch' from the "
                              "Extensions Manager, restart Slicer, then try again.") from error
    if askConfirmation and not slicer.app.commandOptions().testingEnabled:
        if not slicer.util.confirmOkCancelDisplay(
                "ClinicalSeg needs PyTorch, which is not installed yet. Download and install it now? "
                "This can take several minutes (about 1-3 GB)."):
            raise DependencyError("PyTorch is required; installation was declined.")
        choices = list(TORCH_BACKEND_CHOICES)
        choice = qt.QInputDialog.getItem(slicer.util.mainWindow(), "Install PyTorch", "PyTorch build:",
                                         choices, 0, False)
        if not choice:
            raise DependencyError("PyTorch is required; installation was declined.")
        backend = torch_backend(choice)
    else:
        backend = None
    logic = PyTorchUtils.PyTorchUtilsLogic()
    torch = logic.installTorch(askConfirmation=False, forceComputationBackend=backend,
                               torchVersionRequirement=TORCH_REQUIREMENT)
    if torch is None:
        raise DependencyError("PyTorch installation did not complete.")


def ensurePackages(askConfirmation: bool = True) -> list[str]:
    """pip-install the pinned packages that are missing; returns the specifiers installed."""
    import slicer

    missing = missing_requirements(pinned_requirements(read_pins(requirements_file())))
    specifiers = pip_arguments(missing)
    if not specifiers:
        return []
    if askConfirmation and not slicer.app.commandOptions().testingEnabled:
        if not slicer.util.confirmOkCancelDisplay(
                "ClinicalSeg needs these Python packages, which are not installed yet:\n\n"
                + "\n".join(specifiers) + "\n\nInstall them now?"):
            raise DependencyError("Required Python packages were not installed: " + ", ".join(specifiers))
    slicer.util.pip_install(specifiers)
    importlib.invalidate_caches()  # find_spec must see the packages pip just added
    still_missing = missing_requirements(missing, importable=is_importable)
    if still_missing:
        raise DependencyError("Installation failed for: " + ", ".join(r.name for r in still_missing))
    return specifiers


def ensureDependencies(askConfirmation: bool = True) -> None:
    """Everything the background ``clinseg`` process needs: torch first, then the pinned packages."""
    ensureTorch(askConfirmation)
    ensurePackages(askConfirmation)
