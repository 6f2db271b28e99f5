"""What the mask formats (VOC, CVAT masks, images/ + masks/ folders) share: safe item keys, an
index of an image folder, the picklable label reader `MaskLabels`, and the writers' helpers
(`write_items`: the per-item loop of the COCO and labelme writers).

Masks of these formats are stored in the image file's raw pixel frame (their tools ignore EXIF),
so `MaskLabels` rotates a mask with its image's EXIF orientation: labels come out in the frame
the window shows (the rule of `base`). Writers bake the orientation into the image they write
(re-encoding it), so what they write is upright and the rule holds both ways.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_studio.core.labels import IGNORE, IGNORE_COLOR, LabelSet
from deeplab_studio.storage.formats.base import (
    Cancel, Cancelled, ExportItem, FormatError, Progress, export_stems, is_cancelled)
from deeplab_studio.storage.images import IMAGE_EXTENSIONS, ImageReadError, apply_orientation, probe_image, read_image
from deeplab_studio.storage.labelmaps import encode_label_png, read_label_png

#: image files this app does not decode, named in `problems` instead of passed over in silence
UNREAD_IMAGE_EXTENSIONS = {".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF"}
_UNSAFE_PART_RE = re.compile(r"[\\:\x00-\x1f\x7f]")


def is_safe_key(key: str) -> bool:
    """True for an item key that names a file inside its folder: `/`-separated parts, none empty,
    `.`, `..` or hidden (leading dot), no backslash, colon or control character."""
    if not key or len(key) > 400 or key.startswith("/"):
        return False
    return all(part and not part.startswith(".") and len(part) <= 200 and not _UNSAFE_PART_RE.search(part)
               for part in key.split("/"))


def unread_reason(path: str | Path) -> str | None:
    """Why an image file of a format this app does not decode is skipped (None for others)."""
    kind = UNREAD_IMAGE_EXTENSIONS.get(os.path.splitext(os.fspath(path))[1].lower())
    if kind is None:
        return None
    return (f"{kind} images are skipped: this app cannot decode {kind} (Pillow has no {kind} decoder "
            "installed); convert them to JPEG or PNG")


def index_images(folder: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Images under `folder` by key (relative path without extension; for one key in several
    formats, the first of `IMAGE_EXTENSIONS` wins), and (file, reason) of image files skipped."""
    found: dict[str, tuple[int, Path]] = {}
    skipped: list[tuple[str, str]] = []
    base = os.fspath(folder)
    for root, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        prefix = "" if root == base else root[len(base) + 1:].replace(os.sep, "/") + "/"
        for name in sorted(files):
            if name.startswith("."):
                continue
            stem, ext = os.path.splitext(name)
            why = unread_reason(name)
            if why is not None:
                skipped.append((prefix + name, why))
            elif ext.lower() in IMAGE_EXTENSIONS:
                rank = IMAGE_EXTENSIONS.index(ext.lower())
                key = prefix + stem
                if key not in found or rank < found[key][0]:
                    found[key] = (rank, Path(root) / name)
    return {k: p for k, (_, p) in found.items()}, skipped


def lookup_palette(colors: Iterable[tuple[int, int, int] | None] | None) -> np.ndarray | None:
    """A 256-colour palette for reading colour masks: entry i is colour i, 255 the void colour;
    unused entries repeat colour 0 (first match wins, so they never match). None: no colours."""
    if colors is None:
        return None
    cols = list(colors)
    if not cols or any(c is None for c in cols):
        return None
    pal = np.repeat(np.asarray([cols[0]], np.uint8), 256, axis=0)
    pal[: len(cols)] = np.asarray(cols, np.uint8)
    pal[IGNORE] = IGNORE_COLOR
    return pal


@dataclass(frozen=True)
class MaskLabels:
    """Reads one mask file as labels in the displayed frame of its image (picklable).

    Index masks (palette, grayscale) are taken as stored, colour masks looked up in `palette`
    (default: the VOC colours); `lut` (256 entries) then maps the file's numbering to the
    dataset's (e.g. a declared void entry → 255)."""

    mask: Path
    image: Path
    palette: np.ndarray | None = None
    lut: np.ndarray | None = None

    def __call__(self) -> np.ndarray:
        if not self.mask.is_file():
            raise FormatError(f"{self.mask}: no such mask file")
        info = probe_image(self.image)
        labels = read_label_png(self.mask, self.palette)
        w, h = info.raw_size
        if labels.shape != (h, w):
            raise FormatError(f"{self.mask}: is {labels.shape[1]}×{labels.shape[0]}, its image {self.image.name} "
                              f"is {w}×{h}")
        if self.lut is not None:
            labels = self.lut[labels]
        return np.ascontiguousarray(apply_orientation(labels, info.orientation))


# --- writing -------------------------------------------------------------------------------
def write_bytes(path: Path, data: bytes | str) -> None:
    """Write into a staging folder (no fsync per file: the folder is swapped in whole). Text is
    UTF-8; names that are not (surrogate escapes) are written as the bytes they stand for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)


def _encoded(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(rgb).save(buf, format="JPEG", quality=95, subsampling=0)
    else:
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def place_image(src: Path, dst_stem: Path, size: tuple[int, int], *, jpeg_only: bool) -> Path:
    """Write `src` as `dst_stem` + extension: copied byte for byte when it is upright (no EXIF
    rotation) and of a kind the format takes (`jpeg_only`: an RGB or grayscale JPEG), else decoded
    once (EXIF applied) and written as JPEG quality 95 (JPEG sources, or `jpeg_only`) or PNG.
    A copy is decoded once after writing, so a damaged source fails here. Returns the path."""
    info = probe_image(src)
    upright = info.orientation == 1 and info.size == size
    if upright and (not jpeg_only or (info.format == "JPEG" and info.mode in ("RGB", "L"))):
        dst = dst_stem.with_name(dst_stem.name + (".jpg" if jpeg_only else src.suffix.lower()))
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        try:
            read_image(dst)
        except ImageReadError as exc:
            raise ImageReadError(src, exc.reason) from None
        return dst
    fmt = "JPEG" if jpeg_only or info.format in ("JPEG", "MPO") else "PNG"
    dst = dst_stem.with_name(dst_stem.name + (".jpg" if fmt == "JPEG" else ".png"))
    write_bytes(dst, _encoded(read_image(src), fmt))
    return dst


def index_png(labels: np.ndarray, classes: LabelSet) -> bytes:
    """A palette PNG: pixel = class index (255 void), drawn in the classes' colours."""
    return encode_label_png(labels, classes.palette())


def colour_png(labels: np.ndarray, classes: LabelSet) -> bytes:
    """An RGB PNG: pixel = the class colour (void: the VOC void colour)."""
    buf = io.BytesIO()
    Image.fromarray(classes.palette()[labels]).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def check_colours(classes: LabelSet, what: str) -> None:
    """Colour masks need one colour per class, none the void colour: FormatError otherwise."""
    seen: dict[tuple[int, int, int], str] = {tuple(IGNORE_COLOR): "void"}
    for name, color in zip(classes.names, classes.colors):
        if tuple(color) in seen:
            raise FormatError(f"classes {seen[tuple(color)]!r} and {name!r} share the colour {tuple(color)}; "
                              f"{what} tells classes apart by colour: give each class its own colour first")
        seen[tuple(color)] = name


def checked_labels(item: ExportItem, n_classes: int) -> np.ndarray:
    """The item's label map, checked against its size and the class list."""
    labels = np.asarray(item.labels())
    if labels.dtype != np.uint8 or labels.shape != (item.size[1], item.size[0]):
        raise FormatError(f"{item.key}: its label map is {labels.shape[1]}×{labels.shape[0]}, the image "
                          f"{item.size[0]}×{item.size[1]}")
    bad = (labels >= n_classes) & (labels != IGNORE)
    if bad.any():
        raise FormatError(f"{item.key}: its label map uses class {int(labels[bad].max())}, there are "
                          f"{n_classes} classes")
    return labels


def write_pairs(stage: Path, items: Iterable[ExportItem], classes: LabelSet, *, image_dir: str, mask_dir: str,
                encode, jpeg_only: bool, progress: Progress | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Write each item's image under `image_dir` and its mask (`encode(labels, classes)`) under
    `mask_dir` as `<stem>.png` (stems from `export_stems`), through `write_items`; returns (stems
    written, (key, reason) of items that failed)."""
    done: list[str] = []

    def write_one(item: ExportItem, stem: str, written: list[Path]) -> None:
        labels = checked_labels(item, len(classes))
        written.append(place_image(item.image, stage / image_dir / stem, item.size, jpeg_only=jpeg_only))
        written.append(stage / mask_dir / f"{stem}.png")
        write_bytes(written[-1], encode(labels, classes))
        done.append(stem)

    return done, write_items(items, stage / image_dir, write_one, progress=progress)


def write_items(items: Iterable[ExportItem], image_dir: Path,
                write_one: Callable[[ExportItem, str, list[Path]], object], *,
                progress: Progress | None = None, cancel: Cancel = None) -> list[tuple[str, str]]:
    """Call `write_one(item, stem, written)` for each item (stems from `export_stems`); it lists
    each file in `written` as it writes it. Returns (key, reason) of the items that failed: a
    failure removes the item's files (those listed, and its image under `image_dir` in any
    extension `place_image` may have left). A missing source image is an item's failure; any
    other OSError (the stage cannot be written) stops the run, as `cancel` does (Cancelled)."""
    items = list(items)
    stems = export_stems(it.key for it in items)
    failed: list[tuple[str, str]] = []
    for k, item in enumerate(items):
        if is_cancelled(cancel):
            raise Cancelled("export cancelled")
        if progress:
            progress(k, len(items), item.key)
        written: list[Path] = []
        try:
            write_one(item, stems[item.key], written)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not item.image.exists():
                failed.append((item.key, f"{item.image}: no such file"))
                continue
            raise  # the stage itself cannot be written: the run stops
        except Exception as exc:  # noqa: BLE001 - this item's failure (MemoryError included)
            failed.append((item.key, describe_failure(item.key, exc)))
            stem = image_dir / stems[item.key]
            for p in {*written, *(stem.with_name(stem.name + e) for e in (item.image.suffix.lower(), ".jpg", ".png"))}:
                p.unlink(missing_ok=True)
    return failed


def describe_failure(name: str, exc: BaseException) -> str:
    """One line for an item that failed: names the file, says what went wrong."""
    if isinstance(exc, MemoryError):
        return f"{name}: not enough memory to process it"
    msg = str(exc)
    return msg if msg else f"{name}: {type(exc).__name__}"
