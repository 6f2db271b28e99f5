"""Atomic file writes: a crash at any moment leaves either the old or the new file, never a torn one.

Each write goes to a temporary file in the same folder, named `.<name>.tmp-<pid>-<random>`, is
flushed and fsync'ed, renamed over the target with `os.replace`, and the folder is fsync'ed so the
rename itself is durable. Leftovers of an interrupted write are hidden files with that pattern:
readers ignore them and `cleanup_temp_files` removes the ones whose writer process is gone.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Callable

_TEMP_RE = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}$")


def temp_name_for(path: Path) -> Path:
    """A fresh temporary path beside `path` in the recognisable leftover pattern."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def is_temp_file(name: str) -> bool:
    """True for names made by `temp_name_for` (leftovers of an interrupted write)."""
    return _TEMP_RE.match(name) is not None


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` through `write(file)` into a temporary sibling, then flush, fsync, replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name_for(path)
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (parent folders are created)."""
    _atomic_write(Path(path), lambda f: f.write(data))


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

    _atomic_write(Path(dst), copy)


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
            m = _TEMP_RE.match(name)
            if m and not pid_alive(int(m.group(1))):
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except OSError:
                    pass
    return removed
