"""Pascal VOC segmentation folders (the layout is in `storage.voc_format`): reader and writer.

Reading takes any split file: `--split S` reads `ImageSets/Segmentation/S.txt`; without it,
`trainval.txt`, else the union of the split files there (`train.txt` + `val.txt` as Datumaro
writes them, `default.txt` as CVAT does; `test.txt` only when it is the one file), else every
mask in `SegmentationClass/`. Each item keeps its own split (`subset`: train/val when listed
there), so training uses the dataset's train/val split. Ids may name subfolders (`a/b`, as CVAT
writes for tasks with folders); unsafe ids (`..`, absolute, hidden) are skipped and named.

Classes and colours: `dataset_meta.json` (Datumaro's, preferred as Datumaro does), else
`labelmap.txt` (its void entry `ignored` is 255, not a class), else `class_names.txt`, else the
21 VOC classes. Index masks are read as stored, colour masks looked up in those colours.

The writer is the format's plain form (flat layout, ids keeping subfolders, a seeded 80/20 split); the
project export with its options (VOCdevkit layout, statuses, object maps, self-check) is
`storage.voc.export_voc`, which writes the same files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from deeplab_studio.core.labels import IGNORE, VOC_CLASSES, LabelSet
from deeplab_studio.storage.formats.base import (
    ExportItem, FormatError, Progress, SourceDataset, SourceItem)
from deeplab_studio.storage.formats.mask_files import (
    MaskLabels, index_images, index_png, is_safe_key, lookup_palette, write_bytes, write_pairs)
from deeplab_studio.storage.voc_format import (
    CLASS_DIR, CLASS_NAMES_FILE, JPEG_DIR, LABELMAP_FILE, META_FILE, SPLIT_DIR, VOCError, _read_lines,
    class_names_text, find_voc_root, is_void_entry, labelmap_text, parse_class_names,
    parse_labelmap_entries, parse_meta_entries, shown, split_ids)

Entry = tuple[str, "tuple[int, int, int] | None"]


def class_entries(root: Path) -> tuple[list[Entry], list[str], bool]:
    """(entries in the files' order, notes, declared) of a VOC folder's class files."""
    notes: list[str] = []
    meta, lm, cn = root / META_FILE, root / LABELMAP_FILE, root / CLASS_NAMES_FILE
    if meta.is_file():
        entries: list[Entry] = parse_meta_entries(meta)
        used = META_FILE
    elif lm.is_file():
        entries, used = parse_labelmap_entries(lm), LABELMAP_FILE
    elif cn.is_file():
        return [(n, None) for n in parse_class_names(cn).names], [f"classes: {CLASS_NAMES_FILE}"], True
    else:
        return [(n, None) for n in VOC_CLASSES], ["classes: none declared, the 21 Pascal VOC classes"], False
    notes.append(f"classes: {used}")
    if cn.is_file():
        listed = parse_class_names(cn).names
        if listed != [n for n, _ in entries if not is_void_entry(n)]:
            notes.append(f"{CLASS_NAMES_FILE} lists other classes than {used}; {used} is used (as Datumaro does)")
    return entries, notes, True


def numbering(entries: list[Entry]) -> tuple[list[str], list, np.ndarray, np.ndarray]:
    """(class names, colours, palette, lut): classes without the void entries; the palette reads
    colour masks into the entries' numbering, the LUT maps that numbering onto the classes
    (void entries → 255)."""
    names, colors = [], []
    lut = np.full(256, IGNORE, np.uint8)
    for i, (name, color) in enumerate(entries):
        if is_void_entry(name):
            continue
        lut[i] = len(names)
        names.append(name)
        colors.append(color)
    if not names:
        raise FormatError("the class list names no class, only void")
    n_void = len(entries) - len(names)
    for v in range(len(entries), IGNORE):  # beyond the list: still out of range, for the caller's class check
        lut[v] = v - n_void
    raw = [c for _, c in entries]
    if any(c is None for c in raw):  # no colours declared: VOC's colours, by position
        palette = LabelSet.voc().palette()
        declared = None
    else:
        palette = lookup_palette(raw)
        declared = [c for n, c in entries if not is_void_entry(n)]
    return names, declared or [], palette, lut


def _split_files(root: Path) -> list[str]:
    sets = root / SPLIT_DIR
    return sorted(p.stem for p in sets.glob("*.txt") if p.is_file()) if sets.is_dir() else []


def _ids_of(root: Path, split: str) -> list[str]:
    path = root / SPLIT_DIR / f"{split}.txt"
    return list(dict.fromkeys(line for _, line in _read_lines(path, file_names=True)))


def choose_ids(root: Path, split: str | None, default: str = "trainval") -> tuple[list[tuple[str, str]], str]:
    """((id, subset) in order, note) for `split` (None: see the module doc)."""
    present = _split_files(root)
    if split is not None:
        if split not in present:
            raise VOCError(f"{root / SPLIT_DIR / (split + '.txt')}: no such split file "
                           f"(splits here: {', '.join(present) or 'none'})")
        chosen = [split]
    elif default in present:
        chosen = [default]
    elif present:
        chosen = [s for s in present if s != "test"] or present
    else:
        masks = sorted(p.relative_to(root / CLASS_DIR).with_suffix("").as_posix()
                       for p in (root / CLASS_DIR).rglob("*.png") if not p.name.startswith("."))
        return [(m, "") for m in masks], f"no split files: every mask in {CLASS_DIR}/ ({len(masks)})"
    member = {s: set(_ids_of(root, s)) for s in ("train", "val") if s in present}
    out: dict[str, str] = {}
    for s in chosen:
        for line in _ids_of(root, s):
            if line not in out:
                out[line] = next((t for t in ("train", "val") if line in member.get(t, ())), s)
    left = [s for s in present if s not in chosen and s != "test" and split is None and default not in present]
    note = f"split: {' + '.join(f'{s}.txt' for s in chosen)}" + (f" (also here: {', '.join(left)})" if left else "")
    return list(out.items()), note


def _resolve_id(root: Path, line: str, images: dict[str, Path]) -> str:
    """The id a split line names: the whole line (Datumaro), or its first word (VOC's `id  1`)."""
    first = line.split()[0]
    if first != line and line not in images and first in images:
        return first
    return line


def read_voc_layout(root: Path, fmt: str, split: str | None, default_split: str) -> SourceDataset:
    """A SourceDataset of the VOC-layout folder `root` (the VOC root itself)."""
    entries, notes, declared = class_entries(root)
    names, colors, palette, lut = numbering(entries)
    images, skipped = index_images(root / JPEG_DIR)
    ids, note = choose_ids(root, split, default_split)
    notes.append(note)
    items, problems = [], list(skipped)
    for line, subset in ids:
        voc_id = _resolve_id(root, line, images)
        if not is_safe_key(voc_id):
            problems.append((shown(voc_id), f"unsafe image id {shown(voc_id)!r} (outside the folder or hidden): skipped"))
            continue
        image = images.get(voc_id)
        mask = root / CLASS_DIR / f"{voc_id}.png"
        if image is None:
            problems.append((shown(voc_id), f"{shown(root / JPEG_DIR / voc_id)}.jpg: image listed in the split is missing"))
            continue
        if not mask.is_file():
            problems.append((shown(voc_id), f"{shown(mask)}: label map listed in the split is missing"))
            continue
        items.append(SourceItem(voc_id, image, MaskLabels(mask, image, palette, lut), subset))
    return SourceDataset(fmt, root, names, colors or None, items, problems, notes, declared)


class VocReader:
    name = "voc"
    title = "Pascal VOC"

    def detect(self, path: Path) -> bool:
        try:
            find_voc_root(path)
        except FormatError:
            return False
        return True

    def read(self, path: Path, split: str | None = None) -> SourceDataset:
        return read_voc_layout(find_voc_root(path), self.name, split, "trainval")


class VocWriter:
    name = "voc"
    title = "Pascal VOC"

    def write(self, stage: Path, items: Iterable[ExportItem], labels: LabelSet, *,
              progress: Progress | None = None) -> list[tuple[str, str]]:
        """VOC: JPEGImages/ (JPEG only), SegmentationClass/ (palette PNGs), the three split
        files (a seeded 80/20 split), class_names.txt and labelmap.txt (void declared)."""
        # ids keep subfolders (`a/b`, from export_stems), as CVAT and Datumaro do
        done, failed = write_pairs(stage, items, labels, image_dir=JPEG_DIR, mask_dir=CLASS_DIR,
                                   encode=index_png, jpeg_only=True, progress=progress)
        train, val = split_ids(sorted(done), 0.2, 0)
        for name, members in (("train", train), ("val", val), ("trainval", sorted(done))):
            write_bytes(stage / SPLIT_DIR / f"{name}.txt", "".join(f"{i}\n" for i in members))
        write_bytes(stage / CLASS_NAMES_FILE, class_names_text(labels))
        write_bytes(stage / LABELMAP_FILE, labelmap_text(labels))
        return failed


READER = VocReader()
WRITER = VocWriter()
