"""The project's value types: image status, image records, problems, and the project errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum

from deeplab_studio.storage.locations import record_key


class Status(str, Enum):
    UNLABELED = "unlabeled"
    AUTO = "auto"
    EDITED = "edited"
    REVIEWED = "reviewed"

    def __str__(self) -> str:  # "auto", not "Status.AUTO", in messages and f-strings
        return self.value


class ProjectError(Exception):
    """A project that cannot be opened or a request it cannot honour (one clear message)."""


class ProjectVersionError(ProjectError):
    """The project was written by a newer DeepLab Studio."""


class ProjectCorruptError(ProjectError):
    """The project index is damaged (not readable, or not the expected structure)."""


class ProjectLockedError(ProjectError):
    """Another DeepLab Studio (window or command) is writing this project."""


class ProjectReadOnlyError(ProjectError):
    """A change was asked of a project opened read-only."""


_GEN_RE = re.compile(r"^(?P<key>[A-Za-z0-9_.-]+?)(?:~(?P<gen>[0-9]+))?\.png$")


def annotation_name(key: str, gen: int) -> str:
    """File name of generation `gen` of an image's label map / edit mask (0: the format-1 name)."""
    return f"{key}.png" if gen == 0 else f"{key}~{gen}.png"


def parse_annotation_name(name: str) -> tuple[str, int] | None:
    """(key, generation) of an annotation file name, or None for other names."""
    m = _GEN_RE.match(name)
    return (m["key"], int(m["gen"] or 0)) if m else None


def status_of_mask(edit_mask) -> Status:
    """The status a saved annotation has by itself: edited when a human painted any pixel."""
    return Status.EDITED if edit_mask.any() else Status.AUTO


def derived_status(current: Status, explicit: Status | None, edit_mask) -> Status:
    """The status after a save: `explicit` when given; reviewed sticks; else from the edit mask."""
    if explicit is not None:
        return Status(explicit)
    return Status.REVIEWED if current == Status.REVIEWED else status_of_mask(edit_mask)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(eq=False)
class ImageRecord:
    """One image of the project (mutable: the project updates status and timestamps in place).

    `gen` is the generation of the saved label-map / edit-mask pair (None: unlabeled);
    `journal_seq` the last journaled change that pair contains."""

    path: str  # relative to the project folder, posix separators (surrogate escapes for non-UTF-8 bytes)
    width: int
    height: int
    status: Status = Status.UNLABELED
    created: str = ""
    modified: str = ""
    key: str = ""
    file_size: int = -1
    file_mtime_ns: int = -1
    gen: int | None = None
    journal_seq: int = 0

    def __post_init__(self) -> None:
        self.status = Status(self.status)
        if not self.key:
            self.key = record_key(self.path)

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def row(self) -> dict:
        """The index row of this record."""
        return {"path": self.path, "key": self.key, "width": self.width, "height": self.height,
                "status": self.status.value, "created": self.created, "modified": self.modified,
                "file_size": self.file_size, "file_mtime_ns": self.file_mtime_ns, "gen": self.gen,
                "journal_seq": self.journal_seq}

    @classmethod
    def from_row(cls, row: dict) -> "ImageRecord":
        return cls(**row)


@dataclass(frozen=True)
class Problem:
    """Something the user should know about an image: `missing`, `size_changed`, `unreadable`,
    or `labels_missing` (the index said labelled but its label map is gone)."""

    path: str
    kind: str
    message: str
    record: ImageRecord | None = None

    def __str__(self) -> str:
        return self.message
