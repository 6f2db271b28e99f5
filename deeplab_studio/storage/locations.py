"""Where a project's files live, and which images a folder holds.

`folder/.deeplab_studio/` when it can be written, else the user data folder
`$XDG_DATA_HOME/deeplab-studio/projects/<sha256 of the folder's absolute path>/`.
Image scanning: subfolders included, hidden files/folders skipped, natural sort order.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from deeplab_studio.storage import images as _images
from deeplab_studio.storage.atomic import is_temp_file

DATA_DIR_NAME = ".deeplab_studio"
PROJECT_FILE = "project.json"  # format 1; migrated to INDEX_FILE on first open for writing
INDEX_FILE = "project.sqlite"


class DataDirError(OSError):
    """Neither the folder nor the user data folder can hold the project's data."""


def record_key(rel_path: str) -> str:
    """A filesystem-safe storage name for an image, unique per relative path (also on
    case-insensitive file systems: the hash of the exact path is part of it)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", rel_path.replace("/", "__")).strip("._")[:60] or "image"
    return f"{safe}-{hashlib.sha1(rel_path.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


@functools.lru_cache(maxsize=1 << 17)
def natural_key(rel_path: str) -> tuple:
    """Sort key: per path component, digit runs compare as numbers, text case-insensitively."""
    parts = []
    for comp in rel_path.split("/"):
        bits = re.split(r"(\d+)", comp)
        parts.append(tuple(int(b) if i % 2 else b.casefold() for i, b in enumerate(bits)))
    return (tuple(parts), rel_path)


def scan_images(folder: Path, *, skip: tuple[Path, ...] = ()) -> list[str]:
    """Relative posix paths of the images under `folder` (subfolders included; hidden files and
    folders and the `skip` folders left out), in natural order."""
    skip_set = {os.path.normcase(str(p)) for p in skip}
    base = os.fspath(folder)
    found = []
    for root, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and os.path.normcase(os.path.join(root, d)) not in skip_set]
        prefix = "" if root == base else root[len(base) + 1:].replace(os.sep, "/") + "/"
        found.extend(prefix + name for name in files if not name.startswith(".") and _images.is_image_file(name))
    return sorted(found, key=natural_key)


def user_data_root() -> Path:
    """Where per-user data lives: `$XDG_DATA_HOME/deeplab-studio` (default `~/.local/share/...`)."""
    base = os.environ.get("XDG_DATA_HOME") or (
        os.environ.get("LOCALAPPDATA") if os.name == "nt" else None) or str(Path.home() / ".local" / "share")
    return Path(base) / "deeplab-studio"


def can_write_dir(path: Path) -> bool:
    """True when a file can be created in `path` (made if missing) — a real probe, not `os.access`,
    which says yes to root even on read-only mounts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".probe-", dir=path)
        os.close(fd)
        os.unlink(name)
        return True
    except OSError:
        return False


def user_data_dir_for(folder: Path) -> Path:
    """The user-data location of the project of a read-only `folder` (absolute path)."""
    return user_data_root() / "projects" / hashlib.sha256(str(folder).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def has_index(data_dir: Path) -> bool:
    """True when `data_dir` holds a project index (either format)."""
    return (data_dir / INDEX_FILE).is_file() or (data_dir / PROJECT_FILE).is_file()


def has_images(folder: Path, *, skip: tuple[Path, ...] = ()) -> bool:
    """True as soon as one image is found under `folder` (the rules of `scan_images`)."""
    skip_set = {os.path.normcase(str(p)) for p in skip}
    for root, dirs, files in os.walk(os.fspath(folder)):
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and os.path.normcase(os.path.join(root, d)) not in skip_set]
        if any(not n.startswith(".") and _images.is_image_file(n) for n in files):
            return True
    return False


def existing_data_dir(folder: str | Path) -> Path | None:
    """Where the project of `folder` already keeps its data, or None if it has no project yet."""
    folder = Path(folder).expanduser().resolve()
    for d in (folder / DATA_DIR_NAME, user_data_dir_for(folder)):
        if has_index(d):
            return d
    return None


def choose_data_dir(folder: Path) -> Path:
    """The project's data folder: `folder/.deeplab_studio` when writable, else the user data folder
    (seeded once from a read-only `folder/.deeplab_studio` if one exists)."""
    local = folder / DATA_DIR_NAME
    if can_write_dir(local):
        return local
    user = user_data_dir_for(folder)
    if has_index(local) and not has_index(user):
        shutil.copytree(local, user, dirs_exist_ok=True, ignore=lambda _d, names: [n for n in names if is_temp_file(n) or n == "lock"])
    if not can_write_dir(user):
        raise DataDirError(f"{folder}: the folder is read-only and the user data folder {user} is not writable")
    return user
