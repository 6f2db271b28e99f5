"""Pascal VOC import: a VOC folder (ours, or the original VOC2012 devkit) into a project.

Images of the chosen split are copied byte for byte into the project folder as `<id><ext>`
(an identical file already there is reused; a different one with that name gets `<id>-2<ext>`).
Label maps are read as stored (palette PNGs: the pixel values; colour PNGs: exact lookup in the
dataset's colours), checked against the class list, and saved with status `reviewed` and a full
edit mask (ground truth is human work, so model runs never overwrite it). VOC readers ignore EXIF
rotation, so a mask of an EXIF-rotated JPEG is rotated the same way the image is shown.
Classes come from labelmap.txt / class_names.txt, else the 21 VOC classes.
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
from deeplab_studio.storage.project import Project, Status
from deeplab_studio.storage.voc_format import (
    CLASS_DIR, JPEG_DIR, SPLIT_DIR, VOCError, find_voc_root, read_classes, read_split)

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
    n = len(classes)
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
    _merge_classes(project, classes)
    summary = ImportSummary(root, split, project.labels)
    palette = classes.palette()
    try:  # after a bad file midway, what was imported is indexed with its 'reviewed' status
        for k, voc_id in enumerate(ids):
            if progress:
                progress(k, len(ids), voc_id)
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
            rel, how = _place_image(src, project.folder, voc_id)
            summary.copied += how == "copied"
            summary.identical += how == "identical"
            if rel != f"{voc_id}{src.suffix.lower()}":
                summary.renamed.append(voc_id)
            rec = project.add_image(rel)
            if project.has_annotation(rec):
                old, _ = project.load_annotation(rec)
                if np.array_equal(old, labels) and rec.status == Status.REVIEWED:
                    summary.unchanged += 1
                    continue
                if rec.status in (Status.EDITED, Status.REVIEWED) and not overwrite:
                    summary.conflicts.append(rel)
                    continue
            project.save_annotation(rec, np.ascontiguousarray(labels), np.ones(labels.shape, bool),
                                    status=Status.REVIEWED, write_index=False)
            summary.imported += 1
    finally:
        project.save()
    if progress:
        progress(len(ids), len(ids), "done")
    return summary
