"""Choosing the torch device and asking how much memory it and the host have free."""

from __future__ import annotations

import psutil
import torch

from ..errors import InputError


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are honoured.

    Raises ``InputError`` when the requested device is unknown or not available on this machine, so a run
    never silently falls back to a device 10-100x slower than the user asked for.
    """
    text = (preference or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise InputError("device", f"unknown device {preference!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("device", f"{preference!r} requested but CUDA is not available on this machine")
        count = torch.cuda.device_count()
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= count:
            raise InputError("device", f"{preference!r} requested but only {count} CUDA device(s) exist")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _mps_available():
            raise InputError("device", f"{preference!r} requested but Apple MPS is not available on this machine")
        return device
    raise InputError("device", f"unsupported device type {device.type!r} (use auto, cpu, cuda, cuda:N or mps)")


def host_available_bytes() -> int:
    """RAM the operating system can give this process now (free plus reclaimable cache)."""
    return int(psutil.virtual_memory().available)


def device_available_bytes(device: torch.device) -> int:
    """Memory a new allocation on ``device`` can use now; host RAM for the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # Blocks cached by torch's allocator but unused are free for us too.
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type == "mps":
        mps = torch.mps
        if hasattr(mps, "recommended_max_memory"):
            return int(mps.recommended_max_memory() - mps.driver_allocated_memory())
        return host_available_bytes()  # unified memory: the host figure is the best guess
    return host_available_bytes()
