"""One writer per project: an OS advisory lock on `<data dir>/lock`.

The lock is `flock` (POSIX) or `msvcrt.locking` (Windows) on an open file, so the operating system
drops it when the holder exits or is killed: a stale lock never blocks the next open. The file also
holds a line naming the holder (pid, host, program, since when) for the message a second opener
sees. Within one process a second `ProjectLock.acquire` of the same folder fails too (each holds
its own open file), so two `Project` objects can never both write one project.
"""

from __future__ import annotations

import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

LOCK_FILE = "lock"

if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def describe_holder(data_dir: str | Path) -> str:
    """Who holds the lock of `data_dir`, as the holder wrote it ('another program' if unknown)."""
    try:
        text = (Path(data_dir) / LOCK_FILE).read_text("utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text.splitlines()[0] if text else "another program"


class ProjectLock:
    """An acquired project lock; `release()` (or process exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: str | Path) -> "ProjectLock | None":
        """Take the lock of `data_dir` without waiting; None when someone else holds it.

        OSError when the lock file cannot be created (e.g. a read-only data folder)."""
        path = Path(data_dir) / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            return None
        since = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] not in ("", "-", "-c") else "python"
        line = f"DeepLab Studio ({prog}, pid {os.getpid()} on {socket.gethostname()}, since {since})\n"
        try:  # the description is a courtesy: failing to write it must not lose the lock
            if os.name == "nt":  # pragma: no cover - byte 0 is locked on Windows; write after it
                os.lseek(fd, 1, os.SEEK_SET)
            else:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, line.encode("utf-8", "replace"))
        except OSError:
            pass
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            _unlock(fd)
        except OSError:
            pass
        os.close(fd)

    def __del__(self) -> None:
        self.release()
