"""Pascal VOC import: a VOC folder (ours, or the original VOC2012 devkit) into a project.

Images of the chosen split are copied byte for byte into the project folder as `<id><ext>`
(an identical file already there is reused; a different one with that name gets `<id>-2<ext>`).
Label maps are read as stored (palette PNGs: the pixel values; colour PNGs: exact lookup in the
dataset's colours), checked against the class list, and saved with status `reviewed` and a full
edit mask (ground truth is human work, so model runs never overwrite it). VOC readers ignore EXIF
rotation, so a mask of an EXIF-rotated JPEG is rotated the same way the image is shown.
Classes come from labelmap.txt / class_names.txt, else the 21 VOC classes.

A file that fails (missing, unreadable, wrong size, unknown class, out of memory) is listed in
`ImportSummary.failed` and the import goes on with the next; only whole-run failures (no dataset,
no split, classes that clash, a folder that cannot be written) raise. File names that are not
UTF-8 (in JPEGImages/, SegmentationClass/ or a split file) are imported under the same bytes.
"""

from __future__ import annotations

import filecmp
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.storage.atomic import atomic_copy_file
from deeplab_studio.storage.images import apply_orientation, probe_image
from deeplab_studio.storage.labelmaps import read_label_png
from deeplab_studio.storage.locations import can_write_dir
from deeplab_studio.storage.project import Project, ProjectError, Status
from deeplab_studio.storage.voc_format import (
    CLASS_DIR, JPEG_DIR, SPLIT_DIR, VOCError, find_voc_root, read_classes, read_split, shown)

_IMAGE_EXTS = (".jpg", ".jpeg", ".JPG", ".JPEG", ".png", ".PNG")


@dataclass
class ImportSummary:
    voc_root: Path
    split: str
    classes: LabelSet
    imported: int = 0  # label maps stored
    copied: int = 0  # image files copied into the folder
    identical: int = 0  # image files already there, byte-identical
    renamed: list[str] = field(default_factory=list)  # ids stored under another name (name taken)
    unchanged: int = 0  # label maps already stored identically
    conflicts: list[str] = field(default_factory=list)  # human-edited maps left alone (overwrite=False)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, one-line reason): not imported


def _split_ids(root: Path, split: str) -> list[str]:
    if (root / SPLIT_DIR / f"{split}.txt").is_file():
        return read_split(root, split)
    if split == "trainval" and not (root / SPLIT_DIR).is_dir():  # no ImageSets at all: every mask
        return sorted(p.stem for p in (root / CLASS_DIR).glob("*.png") if not p.name.startswith("."))
    raise VOCError(f"{root / SPLIT_DIR / (split + '.txt')}: no such split file")


def _source_image(root: Path, voc_id: str) -> Path:
    for ext in _IMAGE_EXTS:
        p = root / JPEG_DIR / f"{voc_id}{ext}"
        if p.is_file():
            return p
    raise VOCError(f"{root / JPEG_DIR / (voc_id + '.jpg')}: image listed in the split is missing")


def _read_pair(root: Path, voc_id: str, palette, n: int) -> tuple[Path, np.ndarray]:
    """The source image and its checked label map (oriented like the image); raises for this id."""
    src = _source_image(root, voc_id)
    mask_path = root / CLASS_DIR / f"{voc_id}.png"
    if not mask_path.is_file():
        raise VOCError(f"{mask_path}: label map listed in the split is missing")
    info = probe_image(src)
    labels = apply_orientation(read_label_png(mask_path, palette), info.orientation)
    if labels.shape != (info.size[1], info.size[0]):
        raise VOCError(f"{mask_path}: is {labels.shape[1]}×{labels.shape[0]}, its image {src.name} is "
                       f"{info.size[0]}×{info.size[1]}")
    bad = (labels >= n) & (labels != IGNORE)
    if bad.any():
        raise VOCError(f"{mask_path}: uses class {int(labels[bad].max())}, the dataset has {n} classes")
    return src, np.ascontiguousarray(labels)


def _failure(root: Path, voc_id: str, exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return f"{shown(root / JPEG_DIR / voc_id)}: not enough memory to import it"
    return shown(str(exc)) or f"{shown(voc_id)}: {type(exc).__name__}"


def _place_image(src: Path, folder: Path, voc_id: str) -> tuple[str, str]:
    """Copy `src` into `folder`; returns (relative name, 'copied' | 'identical')."""
    ext = src.suffix.lower()
    n = 1
    while True:
        name = f"{voc_id}{ext}" if n == 1 else f"{voc_id}-{n}{ext}"
        dst = folder / name
        if not dst.exists():
            atomic_copy_file(src, dst)
            return name, "copied"
        if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            return name, "identical"
        n += 1


def _merge_classes(project: Project, classes: LabelSet) -> None:
    if project.labels.names == classes.names and project.labels.colors == classes.colors:
        return
    annotated = any(project.has_annotation(r) for r in project.records)
    if not annotated:
        project.set_labelset(classes)
    elif project.labels.names != classes.names:
        raise VOCError(f"{project.folder}: the project's classes ({', '.join(project.labels.names[:6])}...) differ "
                       f"from the dataset's ({', '.join(classes.names[:6])}...); import into a new folder")


def import_voc(voc_dir: str | Path, into_folder: str | Path, *, split: str = "trainval",
               progress: Callable[[int, int, str], None] | None = None, overwrite: bool = False,
               data_dir: str | Path | None = None) -> ImportSummary:
    """Import split `split` of the VOC dataset at `voc_dir` into the project of `into_folder`
    (created if missing). Human-edited label maps already there are kept unless `overwrite`."""
    root = find_voc_root(voc_dir)
    ids = _split_ids(root, split)
    if not ids:
        raise VOCError(f"{root}: split '{split}' lists no images")
    classes = read_classes(root) or LabelSet.voc()
    folder = Path(into_folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise VOCError(f"{folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VOCError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None
    target = folder.resolve()
    if target == root or target.is_relative_to(root):
        raise VOCError(f"{folder}: import into a folder outside the dataset {root}")
    if root.is_relative_to(target) and not any(p.startswith(".") for p in root.relative_to(target).parts):
        raise VOCError(f"{folder}: holds the dataset {root}, whose images and masks would become project images; "
                       "import into a folder that does not contain it")
    if not can_write_dir(folder):
        raise VOCError(f"{folder}: the folder is not writable, so the images cannot be copied into it")
    project = Project.open(folder, data_dir=data_dir)
    try:
        project.ensure_writable()  # a second import is refused here, before it copies anything
        _merge_classes(project, classes)
        summary = ImportSummary(root, split, project.labels)
        _import_ids(project, root, ids, classes, summary, progress, overwrite)
    finally:
        try:
            project.save()
        finally:
            project.close()  # release the write lock now (the caller may open the project next)
    if progress:
        progress(len(ids), len(ids), "done")
    return summary


def _import_ids(project: Project, root: Path, ids: list[str], classes: LabelSet, summary: ImportSummary,
                progress: Callable[[int, int, str], None] | None, overwrite: bool) -> None:
    """Import each id; a failing one is recorded in `summary.failed`. Errors writing into the
    project (OSError: disk full, permissions; ProjectError) stop the run."""
    palette, n = classes.palette(), len(classes)
    for k, voc_id in enumerate(ids):
        if progress:
            progress(k, len(ids), shown(voc_id))
        try:
            src, labels = _read_pair(root, voc_id, palette, n)
        except Exception as exc:  # noqa: BLE001 - this file's failure (MemoryError included)
            summary.failed.append((shown(voc_id), _failure(root, voc_id, exc)))
            continue
        rel, how = _place_image(src, project.folder, voc_id)
        summary.copied += how == "copied"
        summary.identical += how == "identical"
        if rel != f"{voc_id}{src.suffix.lower()}":
            summary.renamed.append(voc_id)
        try:
            rec = project.add_image(rel)
            if project.has_annotation(rec):
                old, _ = project.load_annotation(rec)
                if np.array_equal(old, labels) and rec.status == Status.REVIEWED:
                    summary.unchanged += 1
                    continue
                if rec.status in (Status.EDITED, Status.REVIEWED) and not overwrite:
                    summary.conflicts.append(rel)
                    continue
            project.save_annotation(rec, labels, np.ones(labels.shape, bool), status=Status.REVIEWED,
                                    write_index=False)
        except (OSError, ProjectError):
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the copied file unreadable, out of memory
            summary.failed.append((shown(voc_id), _failure(root, voc_id, exc)))
            continue
        summary.imported += 1
