"""Network definitions (pure torch; no file or task knowledge) and lookup by class name.

Model cards name their network by class (``"ATM22BaselineUNet"``) or as
``"module:Class"`` relative to this package; ``build_network`` resolves either.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from torch import nn

# Classes whose module is known, so the common case imports one file only.
_KNOWN_MODULES = {"ATM22BaselineUNet": "atm22_baseline"}


def _class_from(module_name: str, class_name: str) -> type[nn.Module] | None:
    module = importlib.import_module(f"{__name__}.{module_name}")
    cls = getattr(module, class_name, None)
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


def get_network_class(name: str) -> type[nn.Module]:
    """The ``nn.Module`` subclass called ``name`` in one of the ``clinseg.nets`` modules.

    Raises ``LookupError`` when no module defines it.
    """
    if ":" in name:
        module_name, class_name = name.split(":", 1)
        cls = _class_from(module_name, class_name)
        if cls is None:
            raise LookupError(f"clinseg.nets.{module_name} has no network class {class_name!r}")
        return cls
    if name in _KNOWN_MODULES:
        cls = _class_from(_KNOWN_MODULES[name], name)
        if cls is not None:
            return cls
    # Networks added later need no entry here: look through every module of the package.
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        cls = _class_from(info.name, name)
        if cls is not None:
            return cls
    raise LookupError(f"no network class {name!r} in clinseg.nets")


def build_network(name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate the network class ``name`` with ``kwargs`` (untrained weights)."""
    return get_network_class(name)(**(kwargs or {}))
