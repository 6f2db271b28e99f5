"""Atomic file writes for storage: thin wrappers over ``core.atomic_file.write_atomic``.

A crash at any moment leaves either the old or the new file, never a torn one: each write goes
to a hidden temporary file in the same folder (``.<name>.tmp-<pid>-<random>``), is fsync'ed,
renamed over the target and the folder fsync'ed (see ``core.atomic_file``). Leftovers of an
interrupted write keep that name: readers ignore them and ``cleanup_temp_files`` removes the
ones whose writer process is gone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

from deeplab_studio.core.atomic_file import (  # noqa: F401  (re-exported: storage's callers use these names)
    is_temp_file, temp_file_pid, temp_name_for, write_atomic, write_bytes_atomic)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (parent folders are created)."""
    write_bytes_atomic(path, data)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    """Replace `path` with `text` atomically (`\\n` line ends on every platform)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1) -> None:
    """Replace `path` with `obj` as UTF-8 JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy the bytes of `src` to `dst` atomically, streaming (no whole-file buffer)."""
    def copy(fout: BinaryIO) -> None:
        with open(src, "rb") as fin:
            shutil.copyfileobj(fin, fout, 1 << 20)

    write_atomic(dst, copy)


def pid_alive(pid: int) -> bool:
    """False only when no process `pid` exists (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but not ours, or cannot tell: leave its file alone
    return True


def cleanup_temp_files(folder: str | Path, *, recursive: bool = False) -> int:
    """Delete leftovers of interrupted writes in `folder`; returns how many were removed.

    Files whose writer process is still alive (including this one) are kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    walker = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]
    for root, _dirs, files in walker:
        for name in files:
            pid = temp_file_pid(name)
            if pid is not None and not pid_alive(pid):
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except OSError:
                    pass
    return removed
