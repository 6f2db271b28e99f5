"""The VOC export's self-check: re-read a written VOC folder completely and compare it with what
was meant to be written (`check_export`); `voc` runs it on the staging folder before the swap.

Every JPEG the export wrote is compared by size and SHA-256 with the bytes it meant to write
(`WrittenJpeg`: the source's bytes for a copy, the encoder's for a conversion) instead of being
decoded again; JPEGs of a folder checked on its own are decoded; label maps are read without Pillow when they are as `encode_label_png` writes them
(`_unfiltered_palette_rows`), else with Pillow.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeplab_studio.core.labels import IGNORE
from deeplab_studio.storage.images import ImageReadError, open_limited, probe_image, read_image
from deeplab_studio.storage.voc_format import (
    CLASS_DIR, CLASS_NAMES_FILE, JPEG_DIR, LABELMAP_FILE, OBJECT_DIR, SPLIT_DIR, SPLITS, VOCError, parse_class_names,
    parse_labelmap, read_split)


class ExportCheckError(VOCError):
    """The written dataset failed its self-check (names the file and what is wrong)."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path  # the file that failed, when one did


@dataclass
class CheckReport:
    ids: list[str]
    splits: dict[str, list[str]]
    num_classes: int


@dataclass(frozen=True)
class WrittenJpeg:
    """A JPEG the export wrote: what the self-check compares the staged file with."""
    height: int
    width: int
    size: int
    sha256: str
    copied: bool = True  # the source's bytes (else the encoder's, for a converted image)

    @classmethod
    def of(cls, data: bytes, height: int, width: int, *, copied: bool) -> WrittenJpeg:
        return cls(height, width, len(data), hashlib.sha256(data).hexdigest(), copied)


def unknown_classes(labels: np.ndarray, n: int) -> bool:
    """True when `labels` holds a value that is neither a class below `n` nor void (255)."""
    return np.count_nonzero(labels >= n) > (np.count_nonzero(labels == IGNORE) if n <= IGNORE else 0)


def label_digest(arr: np.ndarray) -> str:
    """A digest of the pixels and shape (hashed in place: no copy of the array)."""
    h = hashlib.sha1(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def check_export(out_dir: str | Path, *, expected: dict[str, str] | None = None, objects: bool | None = None,
                 written: dict[str, WrittenJpeg] | None = None) -> CheckReport:
    """Re-read a VOC folder completely and check it; raises `ExportCheckError` on the first problem.

    Checks the class files agree, the splits partition trainval, every JPEG decodes fully, every
    class map is mode P, the image's size, and uses only known classes or 255; object maps (when
    present) match their class maps; with `expected` (id -> digest), the label pixels are exact.
    `written` (export only: id -> the JPEG it wrote): those JPEGs are checked by size and SHA-256
    against the bytes written instead of being decoded.
    """
    root = Path(out_dir)

    def fail(path: Path, why: str) -> None:
        raise ExportCheckError(f"{path}: {why}", path)

    try:
        names = parse_class_names(root / CLASS_NAMES_FILE)
        lm = parse_labelmap(root / LABELMAP_FILE)
        splits = {s: read_split(root, s) for s in SPLITS}
    except VOCError as exc:
        raise ExportCheckError(str(exc)) from None
    if lm.names != names.names:
        fail(root / LABELMAP_FILE, f"classes differ from {CLASS_NAMES_FILE}")
    n = len(names)
    tv = splits["trainval"]
    if set(splits["train"]) & set(splits["val"]) or sorted(splits["train"] + splits["val"]) != sorted(tv):
        fail(root / SPLIT_DIR, "train and val do not partition trainval")
    if expected is not None and sorted(expected) != sorted(tv):
        fail(root / SPLIT_DIR / "trainval.txt", "does not list exactly the exported images")
    has_objects = (root / OBJECT_DIR).is_dir() if objects is None else objects
    for voc_id in tv:
        jpg, png = root / JPEG_DIR / f"{voc_id}.jpg", root / CLASS_DIR / f"{voc_id}.png"
        if written and voc_id in written:
            h, w = _check_written(jpg, written[voc_id], fail)
        else:
            try:
                if probe_image(jpg).format != "JPEG":
                    fail(jpg, "not a JPEG file")
                h, w = read_image(jpg).shape[:2]
            except ImageReadError as exc:
                raise ExportCheckError(str(exc), exc.path) from None
        labels = _read_p_png(png, fail)
        if labels.shape != (h, w):
            fail(png, f"is {labels.shape[1]}×{labels.shape[0]}, its image is {w}×{h}")
        if unknown_classes(labels, n):
            fail(png, f"uses class {int(labels[labels != IGNORE].max())}, there are {n} classes")
        if expected is not None and label_digest(labels) != expected[voc_id]:
            fail(png, "label pixels differ from the project's label map")
        if has_objects:
            obj = _read_p_png(root / OBJECT_DIR / f"{voc_id}.png", fail)
            if obj.shape != labels.shape or ((obj == 0) != (labels == 0)).any() or (
                    (labels == IGNORE) & (obj != IGNORE)).any():
                fail(root / OBJECT_DIR / f"{voc_id}.png", "does not match its class map")
    return CheckReport(tv, splits, n)


def _check_written(path: Path, want: WrittenJpeg, fail) -> tuple[int, int]:
    """(h, w) of a JPEG the export wrote, after checking its bytes are those (size, SHA-256)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(path, f"unreadable ({exc.strerror or exc})")
    if len(data) != want.size or hashlib.sha256(data).hexdigest() != want.sha256:
        what = "the source bytes it was copied from" if want.copied else "the JPEG the export encoded"
        fail(path, f"differs from {what} ({len(data)} bytes, {want.size} written)")
    return want.height, want.width


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _unfiltered_palette_rows(data: bytes) -> np.ndarray | None:
    """The pixels of a PNG as `encode_label_png` writes it (palette, 8 bits, not interlaced, every
    row stored with filter 0), read without Pillow: chunks and their CRCs checked, the image data
    inflated (zlib checks its own checksum) and every row's filter byte checked. None for any
    other PNG, or anything wrong with it: the caller then decodes it with Pillow."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    view, pos, n = memoryview(data), len(_PNG_SIGNATURE), len(data)
    header, palette, idat = None, False, []
    while True:
        if pos + 12 > n:
            return None
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > n or zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            return None
        body = view[pos + 8:end - 4]
        if kind == b"IHDR" and length == 13:
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = True
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos = end
    if header is None or not palette or header[2:] != (8, 3, 0, 0, 0):  # 8 bits, palette, deflate, filters 0, no interlace
        return None
    w, h = header[0], header[1]
    size = h * (w + 1)
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(b"".join(idat), size + 1)  # at most one byte more than the image has
    except zlib.error:
        return None
    if len(raw) != size or not inflater.eof:
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(h, w + 1)
    return rows[:, 1:] if not rows[:, 0].any() else None


def _read_p_png(path: Path, fail) -> np.ndarray:
    try:
        rows = _unfiltered_palette_rows(path.read_bytes())
    except OSError as exc:
        fail(path, f"unreadable ({exc.strerror or exc})")
    if rows is not None:
        return rows
    try:
        with open_limited(path) as im:
            im.load()
            if im.mode != "P" or im.format != "PNG":
                fail(path, f"must be a palette (mode P) PNG, is {im.format} mode {im.mode}")
            return np.array(im, dtype=np.uint8)
    except ExportCheckError:
        raise
    except Exception as exc:
        fail(path, f"unreadable ({type(exc).__name__}: {exc})")
    raise AssertionError("unreachable")
