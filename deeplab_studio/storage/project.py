"""The project: a folder of images plus the annotation data kept beside it.

Opening folder `F` keeps data in `F/.deeplab_studio/` — or, when `F` is read-only, in
`$XDG_DATA_HOME/deeplab-studio/projects/<hash of F's absolute path>/` (`Project.data_dir` says
which). The data folder holds

- `project.json`: `format_version`, `classes` (`LabelSet.to_json()`), `label_rev` and
  `label_remaps` (see below), and one record per image: relative posix `path`, storage `key`,
  `width`, `height`, `status`, `created`/`modified` (ISO-8601 UTC), and the file's byte size and
  mtime (so reopening re-reads only headers of files that changed);
- `labels/<key>.png`: the label map, a palette PNG (see `labelmaps`); `masks/<key>.png`: the
  1-bit edit mask (True = painted by a human).

Every file is written atomically. Images are never modified. A damaged `project.json`, or one
written by a newer format version, raises a `ProjectError` subclass and is never overwritten.

Status: `unlabeled` (no label map) → `auto` (saved with an empty edit mask: model/CRF pixels only)
→ `edited` (saved with a non-empty edit mask) → `reviewed` (set explicitly; it sticks when the
image is edited and saved again). `save_annotation(status=None)` derives it; `set_status` sets it.

Class deletion is remapped **lazily and crash-safely**: `set_labelset(labels, lut)` appends the LUT
to `label_remaps` and bumps `label_rev`; every label PNG carries the `label_rev` it was written
under in a text chunk, and `load_annotation` applies the LUTs it missed. No label file is
rewritten, so deleting a class costs one small `project.json` write whatever the project size.
Callers holding a label map in memory apply the same LUT to it themselves.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

import numpy as np

from deeplab_studio.core.labels import LabelSet, LabelSetError
from deeplab_studio.storage import images as _images
from deeplab_studio.storage import locations
from deeplab_studio.storage.atomic import atomic_write_text, cleanup_temp_files
from deeplab_studio.storage.locations import (  # noqa: F401  (re-exported: part of the project API)
    DATA_DIR_NAME, PROJECT_FILE, existing_data_dir, natural_key, record_key, scan_images, user_data_root)
from deeplab_studio.storage.labelmaps import read_label_png_with_text, read_mask_png, write_label_png, write_mask_png

FORMAT_VERSION = 1
REV_TEXT_KEY = "deeplab-studio-label-rev"


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
    """`project.json` was written by a newer DeepLab Studio."""


class ProjectCorruptError(ProjectError):
    """`project.json` is damaged (not JSON, or not the expected structure)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class ImageRecord:
    """One image of the project (mutable: the project updates status and timestamps in place)."""

    path: str  # relative to the project folder, posix separators
    width: int
    height: int
    status: Status = Status.UNLABELED
    created: str = ""
    modified: str = ""
    key: str = ""
    file_size: int = -1
    file_mtime_ns: int = -1

    def __post_init__(self) -> None:
        self.status = Status(self.status)
        if not self.key:
            self.key = record_key(self.path)

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def to_json(self) -> dict:
        return {"path": self.path, "width": self.width, "height": self.height, "status": self.status.value,
                "created": self.created, "modified": self.modified, "key": self.key,
                "file_size": self.file_size, "file_mtime_ns": self.file_mtime_ns}

    @classmethod
    def from_json(cls, d: dict) -> "ImageRecord":
        rec = cls(path=str(d["path"]), width=int(d["width"]), height=int(d["height"]),
                  status=Status(d.get("status", "unlabeled")), created=str(d.get("created", "")),
                  modified=str(d.get("modified", "")), key=str(d.get("key", "")),
                  file_size=int(d.get("file_size", -1)), file_mtime_ns=int(d.get("file_mtime_ns", -1)))
        if rec.width < 1 or rec.height < 1 or rec.path.startswith("/") or ".." in rec.path.split("/"):
            raise ValueError(f"bad image record {d!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", rec.key):
            raise ValueError(f"bad storage key {rec.key!r}")
        return rec


@dataclass(frozen=True)
class Problem:
    """Something the user should know about an image: `missing`, `size_changed`, `unreadable`,
    or `labels_missing` (the record said labelled but its label map is gone)."""

    path: str
    kind: str
    message: str
    record: ImageRecord | None = None


class Project:
    """An open project; create with `Project.open(folder)`."""

    def __init__(self, folder: Path, data_dir: Path) -> None:
        self.folder = folder
        self.data_dir = data_dir
        self.labels = LabelSet.voc()
        self.records: list[ImageRecord] = []  # usable images, natural order
        self.problems: list[Problem] = []
        self.label_rev = 0
        self.label_remaps: list[np.ndarray] = []  # label_remaps[r]: LUT from rev r to r+1
        self._all: dict[str, ImageRecord] = {}  # every record in project.json, problems included
        self._lock = threading.RLock()

    # --- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path, *, data_dir: str | Path | None = None) -> "Project":
        """Open (or start) the project of `folder`, rescanning it for images."""
        folder = Path(folder).expanduser().resolve()
        if not folder.is_dir():
            raise ProjectError(f"{folder}: not a folder")
        try:
            ddir = Path(data_dir).expanduser().resolve() if data_dir is not None else locations.choose_data_dir(folder)
        except OSError as exc:  # DataDirError, or copying a read-only project to the user folder failed
            raise ProjectError(str(exc) if isinstance(exc, locations.DataDirError) else
                               f"{folder}: cannot set up the project data folder ({exc})") from None
        if data_dir is not None and not locations.can_write_dir(ddir):
            raise ProjectError(f"{ddir}: the project data folder is not writable")
        proj = cls(folder, ddir)
        for sub in (ddir, ddir / "labels", ddir / "masks"):
            cleanup_temp_files(sub)
        pfile = ddir / PROJECT_FILE
        changed = not pfile.exists()
        if not changed:
            proj._load_index(pfile)
        changed |= proj._rescan()
        if changed:
            proj.save()
        return proj

    def _load_index(self, pfile: Path) -> None:
        try:
            raw = pfile.read_bytes()
        except OSError as exc:
            raise ProjectError(f"{pfile}: cannot read the project file ({exc.strerror or exc})") from None
        hint = "It was left untouched: restore it from a backup, or move it away to start a new project."
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProjectCorruptError(f"{pfile}: damaged project file (not valid JSON: {exc}). {hint}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("format_version"), int):
            raise ProjectCorruptError(f"{pfile}: damaged project file (no integer format_version). {hint}")
        version = doc["format_version"]
        if version > FORMAT_VERSION:
            raise ProjectVersionError(
                f"{pfile}: written by a newer DeepLab Studio (project format {version}, this version reads "
                f"up to {FORMAT_VERSION}); update the app. The file was left untouched.")
        try:
            if version < 1:
                raise ValueError(f"format_version {version}")
            self.labels = LabelSet.from_json(doc["classes"])
            self.label_rev = int(doc.get("label_rev", 0))
            remaps = [np.asarray(r, dtype=np.int64) for r in doc.get("label_remaps", [])]
            if len(remaps) != self.label_rev or any(r.shape != (256,) or r.min() < 0 or r.max() > 255 for r in remaps):
                raise ValueError("label_remaps do not match label_rev")
            self.label_remaps = [r.astype(np.uint8) for r in remaps]
            for item in doc["images"]:
                rec = ImageRecord.from_json(item)
                self._all[rec.path] = rec
        except (KeyError, TypeError, ValueError, LabelSetError) as exc:
            raise ProjectCorruptError(f"{pfile}: damaged project file ({type(exc).__name__}: {exc}). {hint}") from None

    def _rescan(self) -> bool:
        """Match records with the files on disk; fills `records` and `problems`. True if records changed."""
        changed = False
        problems: list[Problem] = []
        usable: list[ImageRecord] = []
        present = scan_images(self.folder, skip=(self.data_dir,))
        base = os.fspath(self.folder)
        for rel in present:
            try:
                st = os.stat(os.path.join(base, rel))
            except OSError:
                continue
            rec = self._all.get(rel)
            if rec is not None and (st.st_size, st.st_mtime_ns) == (rec.file_size, rec.file_mtime_ns):
                usable.append(rec)
                continue
            p = self.folder / rel
            try:
                w, h = _images.image_size(p)
            except _images.ImageReadError as exc:
                problems.append(Problem(rel, "unreadable", str(exc), rec))
                continue
            if rec is None:
                now = _now()
                rec = ImageRecord(rel, w, h, created=now, modified=now)
                self._all[rel] = rec
            elif (w, h) != rec.size:
                if self.has_annotation(rec):
                    problems.append(Problem(rel, "size_changed",
                                            f"{p}: image is now {w}×{h}, its labels are {rec.width}×{rec.height} "
                                            "(labels kept, image left out)", rec))
                    continue
                rec.width, rec.height = w, h
            rec.file_size, rec.file_mtime_ns = st.st_size, st.st_mtime_ns
            changed = True
            usable.append(rec)
        present_set = set(present)
        for rel, rec in self._all.items():
            if rel not in present_set:
                problems.append(Problem(rel, "missing", f"{self.folder / rel}: image not found (labels kept)", rec))
        labelled = self._label_keys()
        for rec in usable:
            has = rec.key in labelled
            if has and rec.status == Status.UNLABELED:  # label map saved, index not (crash or deferred write)
                rec.status = self._derived_status(rec, None, self.load_annotation(rec)[1])
                changed = True
            elif not has and rec.status != Status.UNLABELED:
                problems.append(Problem(rec.path, "labels_missing",
                                        f"{self._label_file(rec)}: label map missing; image marked unlabeled", rec))
                rec.status = Status.UNLABELED
                changed = True
        self.records = usable
        self.problems = problems
        return changed

    def _label_keys(self) -> set[str]:
        try:
            return {n[:-4] for n in os.listdir(self.data_dir / "labels") if n.endswith(".png") and not n.startswith(".")}
        except OSError:
            return set()

    # --- records and images ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def record(self, path_or_key: str) -> ImageRecord:
        """The record with relative posix path (or storage key) `path_or_key` (KeyError if absent)."""
        rec = self._all.get(path_or_key)
        if rec is None:
            rec = next((r for r in self._all.values() if r.key == path_or_key), None)
        if rec is None:
            raise KeyError(path_or_key)
        return rec

    def image_path(self, rec: ImageRecord) -> Path:
        return self.folder / rec.path

    def read_image(self, rec: ImageRecord) -> np.ndarray:
        """The image as RGB uint8 H×W×3 (ImageReadError if unreadable, ProjectError if resized)."""
        img = _images.read_image(self.image_path(rec))
        if img.shape[:2] != (rec.height, rec.width):
            raise ProjectError(f"{self.image_path(rec)}: image is now {img.shape[1]}×{img.shape[0]}, "
                               f"the project has it as {rec.width}×{rec.height}; reopen the project")
        return img

    def counts(self) -> dict[Status, int]:
        """How many usable images have each status."""
        out = {s: 0 for s in Status}
        for rec in self.records:
            out[rec.status] += 1
        return out

    # --- annotations -----------------------------------------------------------------------
    def _label_file(self, rec: ImageRecord) -> Path:
        return self.data_dir / "labels" / f"{rec.key}.png"

    def _mask_file(self, rec: ImageRecord) -> Path:
        return self.data_dir / "masks" / f"{rec.key}.png"

    def has_annotation(self, rec: ImageRecord) -> bool:
        return self._label_file(rec).is_file()

    def load_annotation(self, rec: ImageRecord) -> tuple[np.ndarray, np.ndarray]:
        """(labels uint8 H×W, edit mask bool H×W); zeros and an empty mask when unlabeled."""
        shape = (rec.height, rec.width)
        lfile = self._label_file(rec)
        if not lfile.is_file():
            return np.zeros(shape, np.uint8), np.zeros(shape, bool)
        labels, text = read_label_png_with_text(lfile)
        try:
            rev = int(text.get(REV_TEXT_KEY, "0"))
        except ValueError:
            rev = 0
        for lut in self.label_remaps[max(rev, 0):]:
            labels = lut[labels]
        mfile = self._mask_file(rec)
        mask = read_mask_png(mfile) if mfile.is_file() else np.zeros(shape, bool)
        for name, arr in (("label map", labels), ("edit mask", mask)):
            if arr.shape != shape:
                raise ProjectError(f"{lfile if name == 'label map' else mfile}: {name} is {arr.shape[1]}×{arr.shape[0]}, "
                                   f"the image {rec.path} is {rec.width}×{rec.height}")
        return labels, mask

    @staticmethod
    def _derived_status(rec: ImageRecord, status: Status | None, edit_mask: np.ndarray) -> Status:
        if status is not None:
            return Status(status)
        if rec.status == Status.REVIEWED:
            return Status.REVIEWED
        return Status.EDITED if edit_mask.any() else Status.AUTO

    def save_annotation(self, rec: ImageRecord, labels: np.ndarray, edit_mask: np.ndarray, *,
                        status: Status | None = None, write_index: bool = True) -> Status:
        """Store the label map and edit mask (atomic, labels first); returns the new status.

        `status=None` derives it (reviewed sticks; else edited if `edit_mask` has any pixel, else
        auto). `write_index=False` leaves `project.json` to a later `save()` (a crash in between
        is recovered on open: a label map on disk with an unlabeled record gets a derived status).
        """
        shape = (rec.height, rec.width)
        labels = np.asarray(labels)
        edit_mask = np.asarray(edit_mask, dtype=bool)
        if labels.dtype != np.uint8 or labels.shape != shape or edit_mask.shape != shape:
            raise ValueError(f"{rec.path}: labels must be uint8 and both arrays {shape}, "
                             f"got {labels.dtype} {labels.shape} and {edit_mask.shape}")
        if status == Status.UNLABELED:
            raise ProjectError(f"{rec.path}: a saved annotation cannot be 'unlabeled' (use clear_annotation)")
        with self._lock:
            if self._all.get(rec.path) is not rec:
                raise ProjectError(f"{rec.path}: not a record of this project")
            write_label_png(self._label_file(rec), labels, self.labels.palette(),
                            text={REV_TEXT_KEY: str(self.label_rev)})
            write_mask_png(self._mask_file(rec), edit_mask)
            rec.status = self._derived_status(rec, status, edit_mask)
            rec.modified = _now()
            if write_index:
                self.save()
            return rec.status

    def set_status(self, rec: ImageRecord, status: Status | None) -> Status:
        """Set a status explicitly (e.g. reviewed), or re-derive it from the stored mask with None."""
        with self._lock:
            has = self.has_annotation(rec)
            if status is None:
                new = Status.UNLABELED if not has else (
                    Status.EDITED if self.load_annotation(rec)[1].any() else Status.AUTO)
            else:
                new = Status(status)
                if new == Status.UNLABELED and has:
                    raise ProjectError(f"{rec.path}: has a label map; use clear_annotation to make it unlabeled")
                if new != Status.UNLABELED and not has:
                    raise ProjectError(f"{rec.path}: no label map saved yet, cannot be '{new.value}'")
            if new != rec.status:
                rec.status = new
                rec.modified = _now()
                self.save()
            return new

    def clear_annotation(self, rec: ImageRecord) -> None:
        """Delete the label map and edit mask; the image becomes unlabeled."""
        with self._lock:
            for f in (self._label_file(rec), self._mask_file(rec)):
                f.unlink(missing_ok=True)
            rec.status = Status.UNLABELED
            rec.modified = _now()
            self.save()

    def forget(self, rec: ImageRecord) -> None:
        """Drop a record (e.g. a missing image's) and its annotation files."""
        with self._lock:
            for f in (self._label_file(rec), self._mask_file(rec)):
                f.unlink(missing_ok=True)
            self._all.pop(rec.path, None)
            self.records = [r for r in self.records if r is not rec]
            self.problems = [p for p in self.problems if p.record is not rec]
            self.save()

    def add_image(self, rel_path: str) -> ImageRecord:
        """Register an image file already under the folder (e.g. just copied in); returns its record."""
        with self._lock:
            rel = Path(rel_path).as_posix()
            if rel in self._all:
                return self._all[rel]
            p = self.folder / rel
            w, h = _images.image_size(p)
            st = p.stat()
            now = _now()
            rec = ImageRecord(rel, w, h, created=now, modified=now, file_size=st.st_size, file_mtime_ns=st.st_mtime_ns)
            self._all[rel] = rec
            self.records.append(rec)
            self.records.sort(key=lambda r: natural_key(r.path))
            return rec

    # --- classes ---------------------------------------------------------------------------
    def set_labelset(self, labelset: LabelSet, lut: np.ndarray | None = None) -> None:
        """Replace the class list; `lut` (256 entries, from `LabelSet.delete`) remaps stored label
        maps lazily (see the module docstring). Saves `project.json`."""
        with self._lock:
            new = LabelSet(list(labelset.names), list(labelset.colors))
            if lut is not None:
                lut = np.asarray(lut)
                if lut.shape != (256,) or lut.min() < 0 or lut.max() > 255:
                    raise ValueError("a label remap is a 256-entry table of values 0..255")
                if not np.array_equal(lut, np.arange(256)):
                    self.label_remaps.append(lut.astype(np.uint8))
                    self.label_rev += 1
            self.labels = new
            self.save()

    # --- saving ----------------------------------------------------------------------------
    def to_json(self) -> dict:
        doc = {
            "format_version": FORMAT_VERSION,
            "app": "deeplab-studio",
            "classes": self.labels.to_json(),
            "label_rev": self.label_rev,
            "label_remaps": [lut.tolist() for lut in self.label_remaps],
            "images": [r.to_json() for r in sorted(self._all.values(), key=lambda r: natural_key(r.path))],
        }
        if self.data_dir != self.folder / DATA_DIR_NAME:
            doc["folder"] = str(self.folder)
        return doc

    def save(self) -> None:
        """Write `project.json` atomically (one image record per line: readable, and fast to write)."""
        with self._lock:
            doc = self.to_json()
            images = doc.pop("images")
            head = json.dumps(doc, indent=1, ensure_ascii=False)[:-2]  # without the closing "\n}"
            body = ",\n  ".join(json.dumps(r) for r in images)  # \u escapes keep non-UTF-8 names
            text = f'{head},\n "images": [\n  {body}\n ]\n}}\n' if images else f'{head},\n "images": []\n}}\n'
            atomic_write_text(self.data_dir / PROJECT_FILE, text)
