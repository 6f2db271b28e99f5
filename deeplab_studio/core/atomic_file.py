"""The one atomic file write: a crash at any moment leaves the old file or the new one, never a torn one.

``write_atomic(path, write)`` calls ``write(file)`` on a temporary file in the same folder, named
``.<name>.tmp-<pid>-<8 hex>``, flushes and fsyncs it, renames it over ``path`` with
``os.replace`` and fsyncs the folder so the rename itself is durable. If ``write`` (or anything
after it) raises, the temporary file is removed and ``path`` is left as it was. Leftovers of a
process killed mid-write keep that recognisable name (``is_temp_file``), so readers can skip
them and cleaners can remove them. Standard library only.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

_TEMP_RE = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}$")


def temp_name_for(path: Path) -> Path:
    """A fresh temporary path beside ``path`` in the recognisable leftover pattern."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def temp_file_pid(name: str) -> int | None:
    """The writer's process id in a name made by ``temp_name_for``; None for any other name."""
    match = _TEMP_RE.match(name)
    return int(match.group(1)) if match else None


def is_temp_file(name: str) -> bool:
    """True for names made by ``temp_name_for`` (leftovers of an interrupted write)."""
    return temp_file_pid(name) is not None


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
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


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object], *, make_parents: bool = True) -> Path:
    """Replace ``path`` with what ``write(file)`` writes into a binary file, atomically.

    The temporary file is created exclusively (mode 0o666 less the umask, like any new file);
    parent folders are created unless ``make_parents`` is false. Whatever ``write`` raises
    propagates after the temporary file is removed. Returns ``path`` as a Path.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name_for(path)
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """``write_atomic`` of a bytes object."""
    return write_atomic(path, lambda fh: fh.write(data))
