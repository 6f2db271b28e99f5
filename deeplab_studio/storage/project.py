"""The project: a folder of images plus the annotation data kept beside it.

Opening folder `F` keeps data in `F/.deeplab_studio/` — or, when `F` is read-only, in
`$XDG_DATA_HOME/deeplab-studio/projects/<hash of F's absolute path>/` (`Project.data_dir` says
which). The data folder holds

- `project.sqlite`: the index (see `index_db`): classes, label revisions, one row per image;
- `labels/<key>[~<gen>].png`: label maps (palette PNG) and `masks/<key>[~<gen>].png`: 1-bit edit
  masks (True = painted by a human), one pair per saved generation;
- `journal/<key>.jnl`: edits not yet in a saved pair (see `journal`); `lock`: see `project_lock`.

**Saves are all-or-nothing.** `save_annotation` writes the new label map and edit mask under a
new generation number (each atomically, fsync'ed), then switches the image's row — generation,
status, journal position — in one transaction, then deletes the old pair. A crash at any moment
leaves the old or the new state, never a mix; on open, files the index does not point to are
removed and journaled edits newer than the saved pair are replayed (and reported in `notes`).

**One writer.** A project opened for writing holds an OS lock; a second `Project.open` (another
window, a command, or this process) raises `ProjectLockedError`, and `read_only=True` opens a
snapshot that refuses every change with `ProjectReadOnlyError`. Close with `close()` or `with`.

Status: `unlabeled` → `auto` → `edited` → `reviewed` (see `records.derived_status`).

Class deletion is remapped **lazily**: `set_labelset(labels, lut)` stores the LUT and bumps
`label_rev`; every label PNG carries the `label_rev` it was written under in a text chunk, and
`load_annotation` applies the LUTs it missed. Callers holding a label map apply the LUT themselves.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from deeplab_studio.core.labels import LabelSet
from deeplab_studio.storage import images as _images
from deeplab_studio.storage import index_db, locations
from deeplab_studio.storage.index_tx import index_transaction, upsert_records
from deeplab_studio.storage.journal import Journal
from deeplab_studio.storage.labelmaps import (  # noqa: F401  (REV_TEXT_KEY re-exported)
    REV_TEXT_KEY, read_label_png_at_rev, read_mask_png, write_label_png, write_mask_png)
from deeplab_studio.storage.locations import (  # noqa: F401  (re-exported: part of the project API)
    DATA_DIR_NAME, PROJECT_FILE, existing_data_dir, natural_key, record_key, scan_images, user_data_root)
from deeplab_studio.storage.project_lock import ProjectLock
from deeplab_studio.storage.project_open import lock_and_load, load_read_only, writable_data_dir
from deeplab_studio.storage.records import (  # noqa: F401  (re-exported)
    ImageRecord, Problem, ProjectCorruptError, ProjectError, ProjectLockedError, ProjectReadOnlyError,
    ProjectVersionError, Status, annotation_name, derived_status, now_iso, parse_annotation_name, status_of_mask)

FORMAT_VERSION = index_db.FORMAT_VERSION
INDEX_FILE = index_db.INDEX_FILE


class Project:
    """An open project; create with `Project.open(folder)`."""

    def __init__(self, folder: Path, data_dir: Path, *, read_only: bool = False, reason: str = "") -> None:
        self.folder = folder
        self.data_dir = data_dir
        self.read_only = read_only
        self.read_only_reason = reason
        self.labels = LabelSet.voc()
        self.records: list[ImageRecord] = []  # usable images, natural order
        self.problems: list[Problem] = []
        self.notes: list[str] = []  # what opening repaired (recovered edits, removed stray files)
        self.label_rev = 0
        self.label_remaps: list[np.ndarray] = []  # label_remaps[r]: LUT from rev r to r+1
        self.journal = Journal(data_dir / "journal")
        self._all: dict[str, ImageRecord] = {}  # every indexed image, problems included
        self._by_key: dict[str, ImageRecord] = {}
        self._lock = threading.RLock()
        self._file_lock: ProjectLock | None = None
        self._conn: sqlite3.Connection | None = None
        self._unborn = False  # an empty folder: nothing is created on disk until the first change

    # --- opening and closing ----------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path, *, data_dir: str | Path | None = None, read_only: bool = False) -> "Project":
        """Open (or start) the project of `folder`, rescanning it for images.

        For writing unless `read_only`; `ProjectLockedError` when another writer has it."""
        folder = Path(folder).expanduser().resolve()
        if not folder.is_dir():
            raise ProjectError(f"{folder}: not a folder")
        if read_only:
            ddir = Path(data_dir).expanduser().resolve() if data_dir is not None else (
                existing_data_dir(folder) or folder / DATA_DIR_NAME)
            proj = cls(folder, ddir, read_only=True, reason="opened read-only")
            load_read_only(proj)
            return proj
        if data_dir is None and existing_data_dir(folder) is None and not locations.has_images(folder):
            proj = cls(folder, folder / DATA_DIR_NAME)
            proj._unborn = True
            return proj
        proj = cls(folder, writable_data_dir(folder, data_dir))
        lock_and_load(proj)
        return proj

    def _materialize(self) -> None:
        """First change in an empty folder: create the data folder, lock and index now."""
        self.data_dir = writable_data_dir(self.folder, None)
        self.journal = Journal(self.data_dir / "journal")
        self._unborn = False
        lock_and_load(self)

    def _add_loaded(self, rec: ImageRecord) -> None:
        self._all[rec.path] = rec
        self._by_key[rec.key] = rec

    def close(self) -> None:
        """Release the write lock and the index (the object stays readable in memory)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            lock, self._file_lock = self._file_lock, None
            if lock is not None:
                lock.release()
            if not self.read_only:
                self.read_only, self.read_only_reason = True, "closed"

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # --- writing ----------------------------------------------------------------------------
    def ensure_writable(self) -> None:
        """Take the write lock now (an empty folder's project is created here): call before work
        that changes the folder, so a second writer is refused before it starts, not midway."""
        with self._lock:
            self._check_writable()

    def _check_writable(self) -> None:
        if self._unborn and not self.read_only:
            self._materialize()
        if self.read_only or self._conn is None:
            raise ProjectReadOnlyError(f"{self.folder}: the project is {self.read_only_reason or 'read-only'}; "
                                       "changes are not saved")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction of the index (a failure rolls back and is a ProjectError)."""
        self._check_writable()
        with index_transaction(self._conn, self.data_dir / INDEX_FILE) as conn:
            yield conn

    def _update_rows(self, recs: list[ImageRecord]) -> None:
        """Insert or replace the rows of `recs` in one transaction."""
        if not recs:
            return
        with self._tx() as conn:
            upsert_records(conn, recs)

    # --- records and images ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def record(self, path_or_key: str) -> ImageRecord:
        """The record with relative posix path (or storage key) `path_or_key` (KeyError if absent)."""
        rec = self._all.get(path_or_key) or self._by_key.get(path_or_key)
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
    def annotation_files(self, rec: ImageRecord, gen: int | None = None) -> tuple[Path, Path]:
        """(label map, edit mask) files of generation `gen` (default: the saved one) of `rec`."""
        gen = rec.gen if gen is None else gen
        name = annotation_name(rec.key, 0 if gen is None else gen)
        return self.data_dir / "labels" / name, self.data_dir / "masks" / name

    def has_annotation(self, rec: ImageRecord) -> bool:
        return rec.gen is not None

    def load_annotation(self, rec: ImageRecord) -> tuple[np.ndarray, np.ndarray]:
        """(labels uint8 H×W, edit mask bool H×W); zeros and an empty mask when unlabeled."""
        return self._load(rec, with_mask=True)

    def load_labels(self, rec: ImageRecord) -> np.ndarray:
        """The label map alone (exports: the edit mask file is not read)."""
        return self._load(rec, with_mask=False)[0]

    def _load(self, rec: ImageRecord, *, with_mask: bool) -> tuple[np.ndarray, np.ndarray]:
        shape = (rec.height, rec.width)
        if rec.gen is None:
            return np.zeros(shape, np.uint8), np.zeros(shape, bool)
        lfile, mfile = self.annotation_files(rec)
        if self.read_only and not lfile.is_file():
            self._refresh_gen(rec)  # a writer saved a newer pair meanwhile
            if rec.gen is None:
                return np.zeros(shape, np.uint8), np.zeros(shape, bool)
            lfile, mfile = self.annotation_files(rec)
        labels = read_label_png_at_rev(lfile, self.label_remaps)
        mask = read_mask_png(mfile) if with_mask and mfile.is_file() else np.zeros(shape, bool)
        for f, name, arr in ((lfile, "label map", labels), (mfile, "edit mask", mask)):
            if arr.shape != shape:
                raise ProjectError(f"{f}: {name} is {arr.shape[1]}×{arr.shape[0]}, "
                                   f"the image {rec.path} is {rec.width}×{rec.height}")
        return labels, mask

    def _refresh_gen(self, rec: ImageRecord) -> None:
        if self._conn is None:
            return
        with self._lock:
            row = self._conn.execute("SELECT gen, status FROM images WHERE path=?",
                                     (index_db.encode_path(rec.path),)).fetchone()
        if row is not None:
            rec.gen, rec.status = row[0], Status(row[1])

    def save_annotation(self, rec: ImageRecord, labels: np.ndarray, edit_mask: np.ndarray, *,
                        status: Status | None = None, write_index: bool = True,
                        journal_seq: int | None = None) -> Status:
        """Store the label map and edit mask as one all-or-nothing change; returns the new status.

        `status=None` derives it (reviewed sticks; else edited if `edit_mask` has any pixel, else
        auto). `journal_seq`: the last journaled change the arrays contain (`journal_last`, taken
        with the snapshot); None for saves that do not come from journaled editing.
        `write_index` is accepted for older callers: every save is committed at once.
        """
        del write_index
        shape = (rec.height, rec.width)
        labels = np.asarray(labels)
        edit_mask = np.asarray(edit_mask, dtype=bool)
        if labels.dtype != np.uint8 or labels.shape != shape or edit_mask.shape != shape:
            raise ValueError(f"{rec.path}: labels must be uint8 and both arrays {shape}, "
                             f"got {labels.dtype} {labels.shape} and {edit_mask.shape}")
        if status == Status.UNLABELED:
            raise ProjectError(f"{rec.path}: a saved annotation cannot be 'unlabeled' (use clear_annotation)")
        with self._lock:
            self._check_writable()
            if self._all.get(rec.path) is not rec:
                raise ProjectError(f"{rec.path}: not a record of this project")
            old_gen = rec.gen
            gen = (old_gen or 0) + 1
            lfile, mfile = self.annotation_files(rec, gen)
            new_status = derived_status(rec.status, status, edit_mask)
            seq = rec.journal_seq if journal_seq is None else max(int(journal_seq), rec.journal_seq)
            modified = now_iso()
            try:
                write_label_png(lfile, labels, self.labels.palette(), text={REV_TEXT_KEY: str(self.label_rev)})
                write_mask_png(mfile, edit_mask)
                with self._tx() as conn:
                    conn.execute("UPDATE images SET gen=?, status=?, modified=?, journal_seq=? WHERE path=?",
                                 (gen, new_status.value, modified, seq, index_db.encode_path(rec.path)))
            except BaseException:
                for f in (lfile, mfile):
                    f.unlink(missing_ok=True)
                raise
            rec.gen, rec.status, rec.modified, rec.journal_seq = gen, new_status, modified, seq
            if old_gen is not None:
                for f in self.annotation_files(rec, old_gen):
                    f.unlink(missing_ok=True)
            self.journal.saved(rec.key, seq)
            return new_status

    def set_status(self, rec: ImageRecord, status: Status | None) -> Status:
        """Set a status explicitly (e.g. reviewed), or re-derive it from the stored mask with None."""
        with self._lock:
            self._check_writable()
            has = self.has_annotation(rec)
            if status is None:
                new = status_of_mask(self.load_annotation(rec)[1]) if has else Status.UNLABELED
            else:
                new = Status(status)
                if new == Status.UNLABELED and has:
                    raise ProjectError(f"{rec.path}: has a label map; use clear_annotation to make it unlabeled")
                if new != Status.UNLABELED and not has:
                    raise ProjectError(f"{rec.path}: no label map saved yet, cannot be '{new.value}'")
            if new != rec.status:
                modified = now_iso()
                with self._tx() as conn:
                    conn.execute("UPDATE images SET status=?, modified=? WHERE path=?",
                                 (new.value, modified, index_db.encode_path(rec.path)))
                rec.status, rec.modified = new, modified
            return new

    def clear_annotation(self, rec: ImageRecord) -> None:
        """Delete the label map and edit mask; the image becomes unlabeled."""
        with self._lock:
            self._check_writable()
            old = rec.gen
            modified = now_iso()
            with self._tx() as conn:
                conn.execute("UPDATE images SET gen=NULL, status='unlabeled', modified=? WHERE path=?",
                             (modified, index_db.encode_path(rec.path)))
            rec.gen, rec.status, rec.modified = None, Status.UNLABELED, modified
            self._drop_files(rec, old)

    def _drop_files(self, rec: ImageRecord, gen: int | None) -> None:
        if gen is not None:
            for f in self.annotation_files(rec, gen):
                f.unlink(missing_ok=True)
        self.journal.discard(rec.key)

    def forget(self, rec: ImageRecord) -> None:
        """Drop a record (e.g. a missing image's) and its annotation files."""
        with self._lock:
            with self._tx() as conn:
                conn.execute("DELETE FROM images WHERE path=?", (index_db.encode_path(rec.path),))
            self._all.pop(rec.path, None)
            self._by_key.pop(rec.key, None)
            self.records = [r for r in self.records if r is not rec]
            self.problems = [p for p in self.problems if p.record is not rec]
            self._drop_files(rec, rec.gen)

    def add_image(self, rel_path: str) -> ImageRecord:
        """Register an image file already under the folder (e.g. just copied in); returns its record."""
        with self._lock:
            rel = Path(rel_path).as_posix()
            if rel in self._all:
                return self._all[rel]
            self._check_writable()
            p = self.folder / rel
            w, h = _images.image_size(p)
            st = p.stat()
            now = now_iso()
            rec = ImageRecord(rel, w, h, created=now, modified=now, file_size=st.st_size, file_mtime_ns=st.st_mtime_ns)
            self._update_rows([rec])
            self._add_loaded(rec)
            self.records.append(rec)
            self.records.sort(key=lambda r: natural_key(r.path))
            return rec

    # --- the journal -----------------------------------------------------------------------
    def journal_edit(self, rec: ImageRecord, bbox: tuple[int, int, int, int], labels: np.ndarray,
                     mask: np.ndarray) -> int:
        """Journal a finished change of `rec` (the pixels of `bbox` after it) so that it survives a
        crash before the next save; returns its sequence number (0 when read-only: not kept)."""
        if self.read_only:
            return 0
        return self.journal.append(rec.key, rec.journal_seq, self.label_rev, bbox, labels, mask)

    def journal_last(self, rec: ImageRecord) -> int:
        """The newest journaled change of `rec`: pass it as `journal_seq` with a snapshot taken now."""
        return self.journal.last_seq(rec.key, rec.journal_seq)

    # --- classes ---------------------------------------------------------------------------
    def set_labelset(self, labelset: LabelSet, lut: np.ndarray | None = None) -> None:
        """Replace the class list; `lut` (256 entries, from `LabelSet.delete`) remaps stored label
        maps lazily (see the module docstring). One transaction."""
        import json

        with self._lock:
            self._check_writable()
            new = LabelSet(list(labelset.names), list(labelset.colors))
            remap = None
            if lut is not None:
                lut = np.asarray(lut)
                if lut.shape != (256,) or lut.min() < 0 or lut.max() > 255:
                    raise ValueError("a label remap is a 256-entry table of values 0..255")
                if not np.array_equal(lut, np.arange(256)):
                    remap = lut.astype(np.uint8)
            rev = self.label_rev + (remap is not None)
            with self._tx() as conn:
                conn.execute("UPDATE meta SET value=? WHERE key='classes'", (json.dumps(new.to_json()),))
                conn.execute("UPDATE meta SET value=? WHERE key='label_rev'", (str(rev),))
                if remap is not None:
                    conn.execute("INSERT INTO remaps VALUES (?, ?)", (self.label_rev, remap.tobytes()))
            if remap is not None:
                self.label_remaps.append(remap)
            self.labels, self.label_rev = new, rev

    # --- compatibility ---------------------------------------------------------------------
    def save(self) -> None:
        """Nothing to do: every change is committed when it is made (kept for older callers)."""
