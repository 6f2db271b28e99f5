"""Checks that turn hostile or odd checkpoint files into one clear reason, before they cost anything.

Nothing here unpickles: pickles are read opcode by opcode with ``pickletools.genops``, zip files
through their central directory only. Each check returns a reason (``str``) or ``None``;
``checkpoints`` wraps the reason in a ``CheckpointError`` naming the file. :func:`load_pth` is
the one ``torch.load(weights_only=True)`` call, with its failures turned into such errors.

Memory budget: a PyTorch ``.pth`` zip may declare at most :func:`memory_budget` bytes of
uncompressed members (4 GiB, or half the memory the OS reports available when that is less,
but never under 1 GiB, so the largest DeepLab files with optimizer state, about 0.5 GB, load on
a busy machine). A zip member can inflate about a thousand-fold, so the declared sizes, not the
file size, decide. Legacy (non-zip) files are stored uncompressed and are bounded by their size.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .errors import CheckpointError  # noqa: F401 (also imported from here)

GIB = 1024 ** 3
MAX_INFLATED_BYTES = 4 * GIB
MIN_INFLATED_BYTES = 1 * GIB
_PICKLE_SCAN_BYTES = 64 * 1024 ** 2  # pickles are read from at most this much of a file
_PICKLE_SCAN_OPS = 2_000_000
_MARK = object()  # a MARK on the simulated pickle stack

# torch warns on stderr, in many lines, about files it then refuses or checks anyway; the
# CheckpointError (or the check) says what matters in one line.
warnings.filterwarnings("ignore", message=r"Detected pickle protocol \d", category=UserWarning)
warnings.filterwarnings("ignore", message="Validating sparse tensor invariants", category=UserWarning)


# --------------------------------------------------------------------------- memory budget

def _available_memory() -> int | None:
    """Bytes the OS reports available (Linux MemAvailable, else free pages), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def memory_budget() -> int:
    """Most bytes a PyTorch zip may inflate to (see the module docstring)."""
    available = _available_memory()
    if available is None:
        return MAX_INFLATED_BYTES
    return max(MIN_INFLATED_BYTES, min(MAX_INFLATED_BYTES, available // 2))


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def zip_budget_problem(path: Path, budget: int | None = None) -> str | None:
    """Why a zip's members (sizes from its central directory) would not fit the budget, or None.

    Raises ``zipfile.BadZipFile`` for a file that is not a readable zip.
    """
    budget = memory_budget() if budget is None else budget
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    total = sum(info.file_size for info in infos)
    if total <= budget:
        return None
    big = max(infos, key=lambda info: info.file_size)
    return (f"too large to load: its members would inflate to {_gib(total)} "
            f"(largest {big.filename!r}, {_gib(big.file_size)}; {_gib(path.stat().st_size)} on disk), "
            f"over the {_gib(budget)} memory budget")


# ------------------------------------------------------------------------- pickle scanning

def _apply(op: pickletools.OpcodeInfo, arg: Any, stack: list) -> None:
    """Move the simulated stack as ``op`` would: pop what it consumes, push what it makes."""
    before = op.stack_before
    if pickletools.markobject in before:
        while stack and stack.pop() is not _MARK:
            pass
        plain = before.index(pickletools.markobject)
    else:
        plain = len(before)
    del stack[max(0, len(stack) - plain):]
    after = op.stack_after
    if len(after) == 1 and not before and after[0] is not pickletools.markobject:
        stack.append(arg)  # a constant (string, number): keep it, STACK_GLOBAL may use it
        return
    stack.extend(_MARK if item is pickletools.markobject else None for item in after)


def _globals_in_one(fh: BinaryIO, found: list[str], budget: list[int]) -> None:
    """Add the ``module.name`` of every global the next pickle in ``fh`` would import."""
    stack: list = []
    memo: dict[Any, Any] = {}
    for op, arg, _pos in pickletools.genops(fh):
        budget[0] -= 1
        if budget[0] < 0:
            return
        name = op.name
        if name in ("GLOBAL", "INST"):
            found.append(str(arg).replace(" ", "."))
            if name == "GLOBAL":
                stack.append(None)
                continue
        elif name == "STACK_GLOBAL":
            attr = stack.pop() if stack else None
            module = stack.pop() if stack else None
            found.append(f"{module}.{attr}" if isinstance(module, str) and isinstance(attr, str)
                         else "an import computed at load time")
            stack.append(None)
            continue
        elif name in ("EXT1", "EXT2", "EXT4"):
            found.append(f"copyreg extension {arg}")
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
            continue
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1] if stack else None
            continue
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg))
            continue
        _apply(op, arg, stack)


def pickle_globals(data: bytes, *, max_pickles: int = 5) -> list[str]:
    """Globals (``module.name``) the pickles at the start of ``data`` import, in order.

    A legacy ``torch.save`` file is several pickles in a row, then raw tensor bytes; scanning
    stops at the first thing that is not a pickle. Nothing is unpickled.
    """
    fh = io.BytesIO(data)
    found: list[str] = []
    budget = [_PICKLE_SCAN_OPS]
    for _ in range(max_pickles):
        start = fh.tell()
        try:
            _globals_in_one(fh, found, budget)
        except Exception:  # noqa: BLE001 - hostile bytes: any failure ends the scan
            break
        if fh.tell() == start or budget[0] < 0:
            break
    return found


def _pickle_bytes(path: Path) -> bytes:
    """The pickle data of a PyTorch file: its ``data.pkl`` member (zip) or its start (legacy)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if not names:
                return b""
            with zf.open(names[0]) as fh:
                return fh.read(_PICKLE_SCAN_BYTES)
    with open(path, "rb") as fh:
        return fh.read(_PICKLE_SCAN_BYTES)


def _allowed_globals(extra: Iterable[str]) -> set[str]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = set(_get_allowed_globals())
    except (ImportError, AttributeError):  # pragma: no cover - other torch versions
        allowed = set()
    return allowed | set(extra)


def unsafe_globals(path: Path, extra_allowed: Iterable[str] = ()) -> list[str]:
    """Globals a PyTorch file's pickle imports beyond torch's weights-only allow-list
    (plus ``extra_allowed``), without unpickling; [] when none (or unreadable)."""
    try:
        names = pickle_globals(_pickle_bytes(path))
    except Exception:  # noqa: BLE001 - only the wording of an error depends on it
        return []
    allowed = _allowed_globals(extra_allowed)
    return list(dict.fromkeys(n for n in names if n not in allowed))


# -------------------------------------------------------------------- weights-only loading

def _numpy_safe_globals() -> list:
    """The only non-torch types a weights-only load may rebuild: numpy scalars and dtypes."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray

    allowed: list = [(multiarray.scalar, "numpy.core.multiarray.scalar"),
                     (multiarray.scalar, "numpy._core.multiarray.scalar"), np.dtype]
    for kind in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
                 np.uint8, np.bool_):
        allowed.append(type(np.dtype(kind)))
    return allowed


def _numpy_safe_names() -> list[str]:
    """``module.name`` of each extra global :func:`_numpy_safe_globals` allows."""
    return [g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"
            for g in _numpy_safe_globals()]


def _refuse_code(path: Path, why: str) -> CheckpointError:
    return CheckpointError(path, "refused to load: the file holds Python objects other than "
                           f"tensors and plain numbers, which could run code ({why})")


def _unpickling_error(path: Path, exc: pickle.UnpicklingError) -> CheckpointError:
    """One line for torch's refusal (many lines advising weights_only=False)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    why = next((line for line in lines if "global" in line.lower()), None)
    if why is None:  # e.g. "Unsupported operand 149" (protocol 4's FRAME): torch stopped before any global
        why = str(exc.__context__ or (lines[-1] if lines else type(exc).__name__)).splitlines()[0]
    why = why.removeprefix("WeightsUnpickler error: ")
    if "global" in why.lower():  # "Unsupported global: GLOBAL x.y ..." / "... GLOBAL posix.system ... blocked"
        return _refuse_code(path, why)
    unsafe = unsafe_globals(path, _numpy_safe_names())
    if unsafe:  # read from the opcodes without unpickling
        return _refuse_code(path, f"it imports {', '.join(unsafe[:3])}")
    return CheckpointError(path, f"corrupt or truncated PyTorch file ({why})")


def _check_zip(path: Path) -> None:
    """Refuse a zip whose members would inflate past the memory budget, before reading any."""
    try:
        problem = zip_budget_problem(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(path, f"corrupt or truncated PyTorch file ({exc})") from None
    if problem:
        raise CheckpointError(path, problem)


def load_pth(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, after the zip budget check; every failure
    is a one-line ``CheckpointError``."""
    if zipfile.is_zipfile(path):
        _check_zip(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_error(path, exc) from None
    except MemoryError:
        raise CheckpointError(path, "not enough memory to load this file") from None
    except Exception as exc:  # noqa: BLE001 - a crafted file can make torch raise anything
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(path, f"corrupt or truncated PyTorch file ({first})") from None


# ------------------------------------------------------------------------ state dict entries

def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def entry_problem(key: Any, value: Any) -> str | None:
    """Why one state-dict entry is not a named, dense, CPU tensor with data, or None."""
    if not isinstance(key, str):
        return f"key {_short(key)} ({type(key).__name__}) is not a parameter name"
    if isinstance(value, (torch.UntypedStorage, torch.TypedStorage)):
        return f"{key!r} is a legacy storage ({type(value).__name__}), not a tensor"
    if not isinstance(value, torch.Tensor):
        return f"{key!r} holds a {type(value).__name__}, not a tensor"
    if value.is_quantized:
        return f"{key!r} is a quantized tensor ({value.dtype}); only float weights are supported"
    if value.is_nested:
        return f"{key!r} is a nested tensor; only plain dense tensors are supported"
    if value.layout != torch.strided:
        return f"{key!r} is a sparse tensor ({value.layout}); only dense tensors are supported"
    if value.is_meta or value.device.type != "cpu":
        return f"{key!r} is a {value.device.type}-device tensor that holds no weights"
    return None


def state_problem(state: Mapping[Any, Any]) -> str | None:
    """The first entry of ``state`` that :func:`entry_problem` refuses, or None."""
    for key, value in state.items():
        problem = entry_problem(key, value)
        if problem:
            return problem
    return None


def _all_finite(tensor: torch.Tensor) -> bool:
    try:
        return bool(torch.isfinite(tensor).all())
    except (RuntimeError, TypeError):  # e.g. float8_e4m3fn has no isfinite on CPU
        return bool(torch.isfinite(tensor.float()).all())


def value_problem(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> str | None:
    """Why the loaded values do not fit the model's (dtype kind, finiteness), or None.

    ``got`` must have the model's keys and shapes (checked before this).
    """
    for key, want in expected.items():
        have = got[key]
        dtype = str(have.dtype).removeprefix("torch.")
        if have.is_complex():
            return f"{key} holds complex numbers ({dtype}); weights must be real floats"
        if want.is_floating_point() and not have.is_floating_point():
            return f"{key} is {dtype} where floating-point weights are expected"
        if have.is_floating_point() and not _all_finite(have):
            return f"{key} holds NaN or infinite values"
    return None
