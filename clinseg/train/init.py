"""Starting weights of a fine-tuning run (``clinseg train ... --init``): a registered model or a weight file.

Fine-tuning the shipped phantom model on real scans (or a phantom model with another loss) needs a fraction of
a training from scratch. Weights come in only through the registry (hash-checked against the card) or through
safetensors; the file's SHA-256 goes into ``run.json``, so a run says exactly what it started from.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, ModelError


def initial_weights(source: str) -> tuple[dict[str, torch.Tensor], str]:
    """``(state dict, provenance)`` of ``source``: a ``.safetensors`` path, or the id of an installed model."""
    from ..registry.store import get_registry, read_state_dict, sha256_file

    path = Path(source).expanduser()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise InputError("--init", f"{source}: no such file")
        try:
            state = read_state_dict(path, "safetensors", source)  # the registry's reader: tensors only, no pickle
        except ModelError as error:
            raise InputError("--init", error.problem) from None
        return state, f"{path.name} sha256:{sha256_file(path)}"
    registry = get_registry()
    try:
        network = registry.load_network(source)  # checks every file's SHA-256 against the card
        card = registry.card(source)
    except (ModelError, LookupError) as error:
        raise InputError("--init", f"{source} is neither a .safetensors file nor a loadable model: {error}") from None
    digests = ",".join(entry.sha256 for entry in card.files)
    return network.state_dict(), f"{source} {card.version} sha256:{digests}"


def load_initial_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``: every tensor must exist and fit (a silent partial start would mislead)."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), "")
        raise InputError("--init", f"{source} does not fit this network ({first} {detail})") from None
