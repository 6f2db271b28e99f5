"""Opening a project: where its data lives, reading (or creating, or migrating) the index, and
what opening checks — the images on disk against the index, label/mask files that no save points
to, and journaled edits newer than the saved annotations (replayed)."""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from deeplab_studio.storage import images as _images
from deeplab_studio.storage import index_db, locations
from deeplab_studio.storage.atomic import cleanup_temp_files
from deeplab_studio.storage.locations import DATA_DIR_NAME, scan_images
from deeplab_studio.storage.project_lock import ProjectLock, describe_holder
from deeplab_studio.storage.records import (
    ImageRecord, Problem, ProjectCorruptError, ProjectError, ProjectLockedError, ProjectVersionError, Status, annotation_name, now_iso,
    parse_annotation_name, status_of_mask)

if TYPE_CHECKING:
    from deeplab_studio.storage.project import Project


def writable_data_dir(folder: Path, data_dir: str | Path | None) -> Path:
    """The data folder a writer uses (`data_dir`, or the folder's own, or the user data folder)."""
    try:
        ddir = Path(data_dir).expanduser().resolve() if data_dir is not None else locations.choose_data_dir(folder)
    except OSError as exc:  # DataDirError, or copying a read-only project to the user folder failed
        raise ProjectError(str(exc) if isinstance(exc, locations.DataDirError) else
                           f"{folder}: cannot set up the project data folder ({exc})") from None
    if data_dir is not None and not locations.can_write_dir(ddir):
        raise ProjectError(f"{ddir}: the project data folder is not writable")
    return ddir


@contextmanager
def _index_errors(index: Path) -> Iterator[None]:
    """Index failures as the project's errors (one clear line each)."""
    try:
        yield
    except index_db.IndexVersionError as exc:
        raise ProjectVersionError(str(exc)) from None
    except index_db.IndexFileError as exc:
        raise ProjectCorruptError(str(exc)) from None
    except (sqlite3.Error, OSError) as exc:
        raise ProjectError(f"{index}: cannot open the project index ({exc})") from None


def _read_index(proj: "Project", index: Path) -> None:
    proj._conn = index_db.open_existing(index)
    proj.labels, proj.label_rev, proj.label_remaps, rows = index_db.read_all(proj._conn, index)
    for row in rows:
        proj._add_loaded(ImageRecord.from_row(row))


def lock_and_load(proj: "Project") -> None:
    """Take the write lock of `proj` (ProjectLockedError when another writer has it), then read
    its index; on any failure the project is closed again."""
    try:
        lock = ProjectLock.acquire(proj.data_dir)
    except OSError as exc:
        raise ProjectError(f"{proj.data_dir}: cannot lock the project ({exc.strerror or exc})") from None
    if lock is None:
        raise ProjectLockedError(f"{proj.folder}: the project is open for writing in "
                                 f"{describe_holder(proj.data_dir)}; close it there first, or open it read-only")
    proj._file_lock = lock
    try:
        load_for_writing(proj)
    except BaseException:
        proj.close()
        raise


def load_for_writing(proj: "Project") -> None:
    """Read the index of a locked project (created or migrated first), then check and repair."""
    ddir = proj.data_dir
    for sub in (ddir, ddir / "labels", ddir / "masks"):
        cleanup_temp_files(sub)
    index = ddir / index_db.INDEX_FILE
    with _index_errors(index):
        if not index.exists() and (ddir / index_db.LEGACY_FILE).exists():
            index_db.migrate_json(ddir, has_labels=lambda key: (ddir / "labels" / f"{key}.png").is_file())
            proj.notes.append(f"converted the project index to {index.name} "
                              f"(the old {index_db.LEGACY_FILE} is kept as {index_db.LEGACY_BACKUP})")
        elif not index.exists():
            folder = None if ddir == proj.folder / DATA_DIR_NAME else str(proj.folder)
            index_db.create(index, proj.labels, folder=folder)
        _read_index(proj, index)
    present = _label_files(proj)
    rescan(proj, present, write=True)
    removed = stray_files(proj, present)
    if removed:
        proj.notes.append(f"removed {removed} label/mask files of interrupted saves")
    recover_journal(proj)


def load_read_only(proj: "Project") -> None:
    """Read the index (either format) without writing anything."""
    ddir = proj.data_dir
    index, legacy = ddir / index_db.INDEX_FILE, ddir / index_db.LEGACY_FILE
    with _index_errors(index):
        if index.exists():
            _read_index(proj, index)
        elif legacy.exists():
            doc = index_db.read_legacy(legacy)
            proj.labels, proj.label_rev, proj.label_remaps = doc["labels"], doc["label_rev"], doc["remaps"]
            for row in doc["rows"]:
                row["gen"] = 0 if (ddir / "labels" / f"{row['key']}.png").is_file() else None
                proj._add_loaded(ImageRecord.from_row(row))
    rescan(proj, _label_files(proj), write=False)


def _label_files(proj: "Project") -> set[str]:
    """Names of the label files that exist (masks are checked per pair)."""
    try:
        return {n for n in os.listdir(proj.data_dir / "labels") if n.endswith(".png") and not n.startswith(".")}
    except OSError:
        return set()


def _match_file(proj: "Project", rel: str, rec: ImageRecord | None, problems: list[Problem],
                changed: list[ImageRecord]) -> ImageRecord | None:
    """The record for image `rel` after checking its file (None when it cannot be used)."""
    p = proj.folder / rel
    try:
        st = os.stat(p)
    except OSError:
        return None
    if rec is not None and (st.st_size, st.st_mtime_ns) == (rec.file_size, rec.file_mtime_ns):
        return rec
    try:
        w, h = _images.image_size(p)
    except _images.ImageReadError as exc:
        problems.append(Problem(rel, "unreadable", str(exc), rec))
        return None
    if rec is None:
        now = now_iso()
        rec = ImageRecord(rel, w, h, created=now, modified=now)
        proj._add_loaded(rec)
    elif (w, h) != rec.size:
        if rec.gen is not None:
            problems.append(Problem(rel, "size_changed", f"{p}: image is now {w}×{h}, its labels are "
                                    f"{rec.width}×{rec.height} (labels kept, image left out)", rec))
            return None
        rec.width, rec.height = w, h
    rec.file_size, rec.file_mtime_ns = st.st_size, st.st_mtime_ns
    changed.append(rec)
    return rec


def rescan(proj: "Project", label_files: set[str], *, write: bool) -> None:
    """Match the index with the images and label files on disk; fills `records` and `problems`
    (and, when `write`, stores the rows that changed in one transaction)."""
    problems: list[Problem] = []
    usable: list[ImageRecord] = []
    changed: list[ImageRecord] = []
    present = scan_images(proj.folder, skip=(proj.data_dir,))
    for rel in present:
        rec = _match_file(proj, rel, proj._all.get(rel), problems, changed)
        if rec is not None:
            usable.append(rec)
    present_set = set(present)
    for rel, rec in proj._all.items():
        if rel not in present_set:
            problems.append(Problem(rel, "missing", f"{proj.folder / rel}: image not found (labels kept)", rec))
    for rec in usable:
        has = rec.gen is not None and annotation_name(rec.key, rec.gen) in label_files
        if rec.gen is not None and not has:
            problems.append(Problem(rec.path, "labels_missing", f"{proj.annotation_files(rec)[0]}: label map "
                                    "missing; image marked unlabeled", rec))
        if not has and (rec.gen is not None or rec.status != Status.UNLABELED):
            rec.gen, rec.status = None, Status.UNLABELED
            changed.append(rec)
        elif has and rec.status == Status.UNLABELED:  # a format-1 label map whose index write was lost
            rec.status = status_of_mask(proj.load_annotation(rec)[1])
            changed.append(rec)
    proj.records = usable
    proj.problems = problems
    if write:
        proj._update_rows(list({id(r): r for r in changed}.values()))


def stray_files(proj: "Project", label_files: set[str]) -> int:
    """Delete label/mask files of known images that no index row points to (left by a save that
    was interrupted before or after its commit); returns how many were removed."""
    removed = 0
    for sub, names in (("labels", label_files), ("masks", None)):
        if names is None:
            try:
                names = {n for n in os.listdir(proj.data_dir / sub) if n.endswith(".png") and not n.startswith(".")}
            except OSError:
                continue
        for name in names:
            parsed = parse_annotation_name(name)
            rec = proj._by_key.get(parsed[0]) if parsed else None
            if rec is None or parsed[1] == rec.gen:
                continue  # not ours to judge, or the current pair
            try:
                os.unlink(proj.data_dir / sub / name)
                removed += 1
            except OSError:
                pass
    return removed


def recover_journal(proj: "Project") -> None:
    """Replay journaled edits newer than each image's saved pair, and save the result."""
    for key in proj.journal.keys():
        rec = proj._by_key.get(key)
        if rec is None:
            continue
        entries = proj.journal.pending(key, rec.journal_seq)
        if not entries:
            proj.journal.saved(key, rec.journal_seq)
            continue
        try:
            labels, mask = proj.load_annotation(rec)
            for e in entries:
                patch = e.labels
                for lut in proj.label_remaps[e.label_rev:]:
                    patch = lut[patch]
                type(e)(e.seq, e.label_rev, e.bbox, patch, e.mask).apply(labels, mask)
            proj.save_annotation(rec, labels, mask, journal_seq=entries[-1].seq)
        except Exception as exc:  # noqa: BLE001 - a damaged annotation must not block opening
            proj.problems.append(Problem(rec.path, "unrecovered", f"{proj.journal.file(key)}: {len(entries)} "
                                         f"unsaved edits of {rec.path} could not be replayed ({exc}); kept", rec))
            continue
        proj.notes.append(f"recovered {len(entries)} unsaved edit{'s' if len(entries) != 1 else ''} of {rec.path}")
