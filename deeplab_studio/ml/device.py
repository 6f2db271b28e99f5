"""Which torch device to run on, and what to do when it runs out of memory.

One rule for inference and training: ``resolve_device("auto")`` is CUDA, then Apple MPS, then the
CPU; ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are checked against this machine (DeviceError).
"""

from __future__ import annotations

import torch

from .errors import DeviceError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto` → CUDA, then Apple MPS, then CPU; `cpu`, `cuda`, `cuda:N`, `mps` are checked.

    A `torch.device` instance is returned as given.
    """
    if isinstance(name, torch.device):
        return name
    key = str(name).strip().lower()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "mps":
        if not mps_ok:
            raise DeviceError("device 'mps' requested but Apple MPS is not available on this machine")
        return torch.device("mps")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU was found"
            raise DeviceError(f"device {name!r} requested but CUDA is not available ({why})")
        index = key.partition(":")[2]
        if index:
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise DeviceError(f"device {name!r}: there are {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(key)
    raise DeviceError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)")


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error of torch (any device) or of the CPU allocator."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def empty_cache(device: torch.device) -> None:
    """Hand the caching allocator's free blocks back (CUDA, MPS; nothing to do on the CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
