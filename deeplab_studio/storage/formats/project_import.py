"""Import any dataset a reader opened (`SourceDataset`) into a project folder.

Images are copied byte for byte (atomically) into the folder as `<key><ext>`, subfolders of the
key created (an identical file already there is reused; a different one with that name gets
`<key>-2<ext>`). Label maps are checked against their image's size and the dataset's classes,
brought into the project's numbering (`class_names.plan_classes`: by name, the `--classes` file,
new classes appended) and saved with status `reviewed` and a full edit mask: ground truth is
human work, so model runs never overwrite it. A label map a human already edited or reviewed is
kept unless `overwrite`.

A file that fails (unreadable, wrong size, unknown class, out of memory) is listed in
`ImportSummary.failed` with the reader's own problems, and the import goes on. A whole-run failure
(the project held by another writer, a folder that cannot be written, disk full, the cancel hook,
Ctrl-C) raises, after removing what this run created: copied images, new records, label maps it
replaced (restored), the class list (restored), and the folder itself when the run created it. The
project's write lock is taken before anything is copied, so a second writer is refused up front.
"""

from __future__ import annotations

import filecmp
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.storage.atomic import atomic_copy_file
from deeplab_studio.storage.formats.base import (
    Cancel, Cancelled, FormatError, Progress, SourceDataset, SourceItem, is_cancelled)
from deeplab_studio.storage.formats.class_names import ClassPlan, parse_class_map, plan_classes
from deeplab_studio.storage.formats.mask_files import describe_failure, is_safe_key
from deeplab_studio.storage.images import probe_image
from deeplab_studio.storage.locations import can_write_dir, existing_data_dir
from deeplab_studio.storage.project import Project, ProjectError, Status
from deeplab_studio.storage.voc_format import shown


@dataclass
class ImportSummary:
    root: Path  # the dataset's root folder
    split: str  # the reader's split note ("" when the format has none)
    classes: LabelSet  # the project's classes after the import
    format: str = ""
    imported: int = 0  # label maps stored
    copied: int = 0  # image files copied into the folder
    identical: int = 0  # image files already there, byte-identical
    renamed: list[str] = field(default_factory=list)  # keys stored under another name (name taken)
    unchanged: int = 0  # label maps already stored identically
    conflicts: list[str] = field(default_factory=list)  # human-edited maps left alone (overwrite=False)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key or file, one-line reason): not imported
    rotated: int = 0  # label maps turned with their image's EXIF orientation
    plan: ClassPlan | None = None  # how the dataset's classes were matched
    notes: list[str] = field(default_factory=list)  # what the reader decided

    @property
    def voc_root(self) -> Path:
        return self.root


def _prepare_folder(folder: Path, root: Path) -> bool:
    """Create `folder` if needed (True when this call created it: a concurrent run that created it
    first owns it) and refuse one that cannot take the import."""
    if folder.exists() and not folder.is_dir():
        raise FormatError(f"{folder}: exists and is not a folder")
    created = False
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)  # FileExistsError: a file is in the way
        folder.mkdir()
        created = True
    except FileExistsError:
        if not folder.is_dir():
            raise FormatError(f"{folder}: cannot create the folder (a file is in the way)") from None
    except OSError as exc:
        raise FormatError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None
    target = folder.resolve()
    problem = None
    if target == root or target.is_relative_to(root):
        problem = f"{folder}: import into a folder outside the dataset {root}"
    elif root.is_relative_to(target) and not any(p.startswith(".") for p in root.relative_to(target).parts):
        problem = (f"{folder}: holds the dataset {root}, whose images and masks would become project images; "
                   "import into a folder that does not contain it")
    elif not can_write_dir(folder):
        problem = f"{folder}: the folder is not writable, so the images cannot be copied into it"
    if problem:
        if created:
            _remove_if_empty(folder)
        raise FormatError(problem)
    return created


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty: another run writes there now
        pass


class _Undo:
    """What this run changed in the project, to take back on a whole-run failure."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.files: list[Path] = []
        self.dirs: list[Path] = []
        self.records: list = []
        self.replaced: list[tuple] = []  # (record, labels, edit mask, status)
        self.labels: LabelSet | None = None

    def mkdirs(self, folder: Path) -> None:
        missing = []
        for p in [folder, *folder.parents]:
            if p.exists():
                break
            missing.append(p)
        for p in reversed(missing):
            p.mkdir()
            self.dirs.append(p)

    def rollback(self) -> None:
        proj = self.project
        try:
            for rec in self.records:
                proj.forget(rec)
            for rec, labels, mask, status in reversed(self.replaced):
                proj.save_annotation(rec, labels, mask, status=status)
            if self.labels is not None:
                proj.set_labelset(self.labels)
        except Exception:  # noqa: BLE001 - the project may be what failed: files are removed below anyway
            pass
        for f in self.files:
            f.unlink(missing_ok=True)
        for d in reversed(self.dirs):
            try:
                d.rmdir()
            except OSError:
                pass


def _place_image(src: Path, folder: Path, key: str, undo: _Undo) -> tuple[str, str]:
    """Copy `src` into `folder` under `key`; returns (relative name, 'copied' | 'identical')."""
    ext = src.suffix.lower()
    n = 1
    while True:
        rel = f"{key}{ext}" if n == 1 else f"{key}-{n}{ext}"
        dst = folder / rel
        if not dst.exists():
            undo.mkdirs(dst.parent)
            atomic_copy_file(src, dst)
            undo.files.append(dst)
            return rel, "copied"
        if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            return rel, "identical"
        n += 1


def _labels_of(item: SourceItem, n_classes: int, lut: np.ndarray) -> tuple[np.ndarray, int]:
    """The item's label map in the project's numbering, checked; and its image's EXIF orientation."""
    labels = np.asarray(item.read_labels())
    info = probe_image(item.image)
    w, h = info.size
    if labels.dtype != np.uint8 or labels.shape != (h, w):
        raise FormatError(f"{shown(item.key)}: the label map is {labels.shape[1]}×{labels.shape[0]}, its image "
                          f"{shown(item.image.name)} is {w}×{h} as shown")
    bad = (labels >= n_classes) & (labels != IGNORE)
    if bad.any():
        raise FormatError(f"{shown(item.key)}: uses class {int(labels[bad].max())}, the dataset has {n_classes} classes")
    return np.ascontiguousarray(lut[labels]), info.orientation


def import_dataset(source: SourceDataset, into_folder: str | Path, *, classes_file: str | Path | None = None,
                   mapping: dict[str, str] | None = None, overwrite: bool = False, progress: Progress | None = None,
                   cancel: Cancel = None, data_dir: str | Path | None = None) -> ImportSummary:
    """Import `source` into the project of `into_folder` (created if missing). `classes_file`
    (or `mapping`, dataset name → project name) maps classes, see `class_names`."""
    mapping = {**(parse_class_map(classes_file) if classes_file is not None else {}), **(mapping or {})}
    if not source.items and not source.problems:
        raise FormatError(f"{source.root}: nothing to import ({'; '.join(source.notes) or 'no items'})")
    folder = Path(into_folder).expanduser()
    had_project = folder.is_dir() and existing_data_dir(folder) is not None
    created = _prepare_folder(folder, Path(source.root).resolve())
    try:
        project = Project.open(folder, data_dir=data_dir)
    except BaseException:
        if created:
            _remove_if_empty(folder)
        raise
    undo = _Undo(project)
    split = next((n.split(": ", 1)[1] for n in source.notes if n.startswith("split: ")), "")
    locked = False  # what this run created is removed only while it holds the project's lock
    try:
        project.ensure_writable()  # a second writer is refused here, before anything is copied
        locked = True
        annotated = any(project.has_annotation(r) for r in project.records)
        plan = plan_classes(source.class_names, source.colors, project.labels, adopt=not annotated, mapping=mapping)
        if plan.changed:
            undo.labels = project.labels
            project.set_labelset(plan.labels)
        summary = ImportSummary(Path(source.root), split, project.labels, source.format, plan=plan,
                                notes=list(source.notes), failed=list(source.problems))
        _import_items(project, source, plan, summary, undo, overwrite, progress, cancel)
    except BaseException as exc:
        if locked:
            undo.rollback()
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            elif not had_project and project.data_dir.exists() and project.data_dir != folder:
                shutil.rmtree(project.data_dir, ignore_errors=True)
        project.close()
        if created and not locked:
            _remove_if_empty(folder)
        if isinstance(exc, OSError):
            raise FormatError(f"{folder}: cannot write into the project ({exc.strerror or exc}); nothing was "
                              "imported") from None
        raise
    project.close()  # release the write lock now (the caller may open the project next)
    if progress:
        progress(len(source.items), len(source.items), "done")
    return summary


def _import_items(project: Project, source: SourceDataset, plan: ClassPlan, summary: ImportSummary, undo: _Undo,
                  overwrite: bool, progress: Progress | None, cancel: Cancel) -> None:
    """Import each item; a failing one is recorded in `summary.failed`. Errors writing into the
    project (OSError: disk full, permissions; ProjectError) stop the run."""
    n = len(source.class_names)
    for k, item in enumerate(source.items):
        if is_cancelled(cancel):
            raise Cancelled("import cancelled; nothing was imported")
        if progress:
            progress(k, len(source.items), shown(item.key))
        if not is_safe_key(item.key):
            summary.failed.append((shown(item.key), f"{shown(item.key)}: unsafe name (outside the folder or hidden)"))
            continue
        try:
            labels, orientation = _labels_of(item, n, plan.lut)
        except Exception as exc:  # noqa: BLE001 - this file's failure (MemoryError included)
            summary.failed.append((shown(item.key), describe_failure(shown(item.key), exc)))
            continue
        rel, how = _place_image(item.image, project.folder, item.key, undo)
        try:
            _store(project, rel, labels, summary, undo, overwrite)
        except (OSError, ProjectError):
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the copied file unreadable, out of memory
            summary.failed.append((shown(item.key), describe_failure(shown(item.key), exc)))
            if how == "copied":
                (project.folder / rel).unlink(missing_ok=True)
            continue
        summary.copied += how == "copied"
        summary.identical += how == "identical"
        summary.rotated += orientation != 1
        if rel != f"{item.key}{item.image.suffix.lower()}":
            summary.renamed.append(item.key)


def _store(project: Project, rel: str, labels: np.ndarray, summary: ImportSummary, undo: _Undo,
           overwrite: bool) -> None:
    try:
        project.record(rel)
        known = True
    except KeyError:
        known = False
    rec = project.add_image(rel)
    if not known:
        undo.records.append(rec)
    if project.has_annotation(rec):
        old, old_mask = project.load_annotation(rec)
        if np.array_equal(old, labels) and rec.status == Status.REVIEWED:
            summary.unchanged += 1
            return
        if rec.status in (Status.EDITED, Status.REVIEWED) and not overwrite:
            summary.conflicts.append(rel)
            return
        if known:
            undo.replaced.append((rec, old, old_mask, rec.status))
    project.save_annotation(rec, labels, np.ones(labels.shape, bool), status=Status.REVIEWED)
    summary.imported += 1
