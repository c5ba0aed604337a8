"""Compact storage of uniformly quantised weights in a safetensors file.

Each quantised kernel is stored as its cell indices bit-packed at ``bits`` bits per weight (default the
fewest that hold ``levels`` codes: 5 for 31 levels) in a ``uint8`` tensor named ``<key>::codes``; everything
else in the state dict (biases, normalisation, buffers) is stored as is. The metadata records the format,
each layer's quantiser (levels, range, scale), the bits and each packed tensor's shape, plus whatever the
caller adds (e.g. the layer widths a channel-pruned network needs to be rebuilt). Loading dequantises with
the quantisers' own ``values``, so the round trip is bit-exact for weights that were on the grid; packing
refuses weights that are not.
(The thesis's 31-level figure, 1.9M for the pruned model, is one byte per weight: ``bits=8``.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ..io.atomic import atomic_write
from ..nets.counting import kernel_layers
from .masks import plain_state_dict
from .quantise import UniformQuantiser

FORMAT = "clinseg-packed-quantised/2"  # /2: one quantiser per layer
CODES_SUFFIX = "::codes"


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Flat uint8 codes (< 2**bits) -> uint8 bytes holding ``bits`` bits each, least significant bit first."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be within 1..8, got {bits}")
    flat = codes.detach().cpu().flatten().to(torch.uint8).numpy()
    if flat.size and int(flat.max()) >= 2**bits:
        raise ValueError(f"a code does not fit in {bits} bits")
    if bits == 8:
        return torch.from_numpy(flat.copy())
    # One uint8 per bit (not int64) keeps a 2M-weight model's temporaries at ~10 MB.
    bit_planes = np.unpackbits(flat[:, None], axis=1, bitorder="little")[:, :bits]
    return torch.from_numpy(np.packbits(bit_planes.reshape(-1), bitorder="little"))


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: the first ``count`` codes (uint8)."""
    raw = packed.detach().cpu().to(torch.uint8).numpy()
    if bits == 8:
        return torch.from_numpy(raw[:count].copy())
    stream = np.unpackbits(raw, bitorder="little")[: count * bits].reshape(count, bits)
    padded = np.zeros((count, 8), dtype=np.uint8)
    padded[:, :bits] = stream
    return torch.from_numpy(np.packbits(padded, axis=1, bitorder="little").reshape(count))


Quantisers = UniformQuantiser | Mapping[str, UniformQuantiser]  # one for all layers, or one per layer name


def _per_layer(model: nn.Module, quantiser: Quantisers) -> dict[str, UniformQuantiser]:
    """``{kernel key: quantiser}`` for every convolution of ``model``."""
    out = {}
    for name, _ in kernel_layers(model):
        q = quantiser.get(name) if isinstance(quantiser, Mapping) else quantiser
        if q is None:
            raise ValueError(f"no quantiser for layer {name!r}")
        out[f"{name}.weight" if name else "weight"] = q
    return out


def packed_bytes(
    model: nn.Module, quantiser: Quantisers, bits: int | None = None, metadata: dict[str, Any] | None = None
) -> bytes:
    """The packed safetensors file of ``model``'s effective weights, as bytes (see the module docstring)."""
    per_key = _per_layer(model, quantiser)
    levels = {q.levels for q in per_key.values()}
    if len(levels) > 1:
        raise ValueError(f"one level count for all layers, got {sorted(levels)}")
    first = next(iter(per_key.values()))
    bits = first.bits if bits is None else bits
    if 2**bits < first.levels:
        raise ValueError(f"{bits} bits cannot hold {first.levels} levels")
    state = plain_state_dict(model)
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}
    specs: dict[str, dict[str, Any]] = {}
    for key, q in per_key.items():
        weight = state.pop(key).cpu()
        codes = q.codes(weight)
        if not torch.equal(q.values(codes, weight.dtype), weight):
            raise ValueError(f"{key} is not on the {q.levels}-level grid: quantise the model first")
        tensors[key + CODES_SUFFIX] = pack_bits(codes, bits)
        shapes[key] = list(weight.shape)
        dtypes[key] = str(weight.dtype).removeprefix("torch.")
        specs[key] = {"scheme": q.scheme, "levels": q.levels, "low": q.low, "high": q.high, "scale": q.scale}
    tensors.update({k: v.cpu().contiguous() for k, v in state.items()})
    header = {
        "format": FORMAT,
        "quantisers": json.dumps(specs),
        "bits": str(bits),
        "shapes": json.dumps(shapes),
        "dtypes": json.dumps(dtypes),
        "user": json.dumps(metadata or {}),
    }
    return st_save(tensors, metadata=header)


def save_packed(
    model: nn.Module,
    path: str | Path,
    quantiser: Quantisers,
    bits: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Write ``packed_bytes(...)`` to ``path`` (atomically); returns the file's size in bytes."""
    data = packed_bytes(model, quantiser, bits, metadata)
    with atomic_write(path) as tmp:
        Path(tmp).write_bytes(data)
    return len(data)


def unpack(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A packed file's bytes -> (plain float state dict, the caller's metadata)."""
    tensors = st_load(data)
    header = _header(data)
    if header.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} file (format {header.get('format')!r})")
    quantisers = {key: UniformQuantiser(int(q["levels"]), float(q["low"]), float(q["high"]), str(q["scheme"]),
                                        float(q["scale"])) for key, q in json.loads(header["quantisers"]).items()}
    bits = int(header["bits"])
    shapes = json.loads(header["shapes"])
    dtypes = json.loads(header["dtypes"])
    state: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key.endswith(CODES_SUFFIX):
            name = key[: -len(CODES_SUFFIX)]
            shape = shapes[name]
            count = 1
            for s in shape:
                count *= s
            codes = unpack_bits(value, bits, count).view(shape)
            state[name] = quantisers[name].values(codes, getattr(torch, dtypes[name]))
        else:
            state[key] = value
    return state, json.loads(header["user"])


def _header(data: bytes) -> dict[str, str]:
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]).get("__metadata__", {})


def load_packed(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by ``save_packed``: (plain float state dict, the caller's metadata)."""
    return unpack(Path(path).read_bytes())
