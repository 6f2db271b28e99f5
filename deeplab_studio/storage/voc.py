"""Pascal VOC export (with a self-check) and import; the layout is described in `voc_format`.

Export writes the whole dataset into a hidden staging folder beside its VOC root, re-reads and
checks it, and only then moves it into place (replacing a previous export of the same project: see
`voc_target` for what may be replaced), so a failed or interrupted export never leaves a
half-written dataset. Staged files are not fsync'ed one by one (that dominated export time); the
swap is a rename, and an export can always be re-run. An image that fails is reported in
`ExportSummary.failed` and left out; the others are exported.

- `JPEGImages/<id>.jpg`: a source JPEG is copied byte for byte when it is upright (no EXIF
  rotation, which VOC readers ignore) and RGB or grayscale; anything else is decoded once with
  `read_image` and written as JPEG quality 95, 4:4:4. A copied JPEG is not decoded: its header is
  checked (`probe_image`) and its marker structure walked to the end of the image (`_jpeg_complete`:
  every segment whole, the last scan ended by EOI), and only a file that fails that walk is decoded
  to tell a damaged source (left out, reported) from an unusual but readable one (copied). The
  self-check compares each JPEG's size and SHA-256 with the bytes the export wrote (the source's
  for a copy, the encoder's for a conversion) instead of decoding it again; every label map is
  decoded and checked (`voc_check`).
- `SegmentationClass/<id>.png`: mode P with the project's class colours, 255 = void.
- `SegmentationObject/<id>.png` (`objects=True`): connected components (8-connected) of each
  class, numbered 1.. in class order then raster order; 255 where the class map is void. VOC
  stores instance numbers in 8 bits: components beyond the 254th are written as 255 (void) and
  counted in `ExportSummary.objects_dropped`.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_studio.core.labels import IGNORE, voc_colormap
from deeplab_studio.storage.images import probe_image, read_image
from deeplab_studio.storage.labelmaps import PngPalette, encode_label_png
from deeplab_studio.storage.project import Project, Status
from deeplab_studio.storage.voc_check import (  # noqa: F401  (CheckReport: public API)
    CheckReport, ExportCheckError, WrittenJpeg, check_export, label_digest, unknown_classes)
from deeplab_studio.storage.voc_format import (
    CLASS_DIR, CLASS_NAMES_FILE, JPEG_DIR, LABELMAP_FILE, OBJECT_DIR, SPLIT_DIR, VOCError, class_names_text,
    labelmap_text, make_ids, shown, split_ids, voc_root_for)
from deeplab_studio.storage.voc_import import ImportSummary, import_voc  # noqa: F401  (public API)
from deeplab_studio.storage.voc_target import (  # noqa: F401  (MARKER_FILE, export_marker...: public API)
    MARKER_FILE, ForeignExportError, check_destination, check_target, export_marker, marker_text,
    other_project_export, staging, swap_into_place)

DEFAULT_STATUSES: tuple[Status, ...] = (Status.REVIEWED, Status.EDITED, Status.AUTO)
Progress = Callable[[int, int, str], None]


@dataclass
class ExportSummary:
    out_dir: Path  # the VOC root (JPEGImages/ ...): `destination` or `destination/VOCdevkit/VOC2012`
    ids: list[str]
    train: list[str]
    val: list[str]
    num_classes: int
    jpegs_copied: int = 0
    images_converted: int = 0
    objects_dropped: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # status -> images left out
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image path, one-line reason), left out
    seconds: float = 0.0
    destination: Path | None = None  # what the caller passed (torchvision's root for the devkit layout)
    layout: str = "flat"


def parse_statuses(statuses: Iterable[Status | str]) -> tuple[Status, ...]:
    """Statuses to export; 'unlabeled' is refused (such images have no label map)."""
    out = []
    for s in statuses:
        try:
            st = Status(str(getattr(s, "value", s)).strip().lower())
        except ValueError:
            raise ValueError(f"unknown status {s!r} (use reviewed, edited, auto)") from None
        if st == Status.UNLABELED:
            raise ValueError("unlabeled images have no label map to export")
        out.append(st)
    if not out:
        raise ValueError("no statuses to export")
    return tuple(dict.fromkeys(out))


def object_map(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """(instance map uint8, components dropped): connected components per class, see module doc."""
    import cv2  # storage may use OpenCV (not core); imported only when objects are asked for

    out = np.zeros(labels.shape, np.uint8)
    out[labels == IGNORE] = IGNORE
    next_id, dropped = 1, 0
    for cls in np.unique(labels):
        if cls in (0, IGNORE):
            continue
        n, comp = cv2.connectedComponents((labels == cls).astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        take = max(0, min(n - 1, 255 - next_id))  # instance numbers next_id..254
        lut = np.full(n, IGNORE, np.uint8)
        lut[0] = 0
        lut[1:1 + take] = np.arange(next_id, next_id + take)
        dropped += n - 1 - take
        next_id += take
        sel = comp > 0
        out[sel] = lut[comp[sel]]
    return out, dropped


def _can_copy_jpeg(path: Path, size: tuple[int, int]) -> bool:
    """True when the source file can be copied unchanged as the VOC JPEG."""
    info = probe_image(path)
    return info.format == "JPEG" and info.orientation == 1 and info.mode in ("RGB", "L") and info.size == size


_NO_LENGTH = frozenset((0x01, *range(0xD0, 0xD8)))
_SEGMENT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # in entropy-coded data: the next marker


def _jpeg_complete(data: bytes) -> bool:
    """True when `data` is a whole JPEG by its marker structure: SOI, length-prefixed segments with
    a frame header before the first scan, each scan's entropy-coded data followed by a marker, and
    EOI after the last scan (bytes after EOI are ignored, as decoders do). False for anything else,
    a truncated file in particular; nothing is decoded."""
    n = len(data)
    if data[:2] != b"\xff\xd8":
        return False
    pos, frame, scans = 2, False, 0
    while pos < n:
        if data[pos] != 0xFF:
            return False
        while pos < n and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= n:
            return False
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return frame and scans > 0
        if marker in _NO_LENGTH:  # TEM, RST
            continue
        if marker in (0x00, 0xD8) or pos + 2 > n:
            return False
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2 or pos + length > n:
            return False
        frame = frame or marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data up to the next real marker
            if not frame:
                return False
            scans += 1
            m = _SEGMENT_MARKER.search(data, pos)
            if m is None:
                return False
            pos = m.start()
    return False


def _encode_jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()


class _StageWriteError(Exception):
    """Writing into the staging folder failed: the whole export stops (disk full, permissions)."""


def _write(path: Path, data: bytes | str) -> None:
    """Write into the staging folder: no per-file fsync (the folder is swapped in whole); the
    folder is made on the first write into it."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    try:
        try:
            path.write_bytes(data)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    except OSError as exc:
        raise _StageWriteError(f"{path}: cannot write ({exc.strerror or exc})") from exc


@dataclass(frozen=True)
class _Palettes:
    """The PNG palettes of one export, made once."""
    classes: PngPalette
    objects: PngPalette


def _failure(path: str | Path, exc: BaseException) -> str:
    """One line for a file that failed: names the file once, says what went wrong."""
    if isinstance(exc, MemoryError):
        return f"{shown(path)}: not enough memory to process it"
    msg = shown(str(exc))
    return msg if msg.startswith(shown(path)) else f"{shown(path)}: {msg or type(exc).__name__}"


def _export_one(project: Project, rec, stage: Path, voc_id: str, objects: bool, summary: ExportSummary,
                written: dict[str, WrittenJpeg], palettes: _Palettes) -> str:
    """Write one image's JPEG, class map (and object map) into the stage; returns the labels' digest.
    Raises on a problem with this image (its partial files are the caller's to remove)."""
    n_classes = len(project.labels)
    labels = project.load_labels(rec)
    if unknown_classes(labels, n_classes):
        raise VOCError(f"{project.image_path(rec)}: its label map uses class {int(labels[labels != IGNORE].max())}, "
                       f"the project has {n_classes} classes")
    src = project.image_path(rec)
    jpg = stage / JPEG_DIR / f"{voc_id}.jpg"
    if _can_copy_jpeg(src, rec.size):
        data = src.read_bytes()
        if not _jpeg_complete(data):  # a damaged source fails here (this file's failure, not the run's);
            h, w = read_image(src).shape[:2]  # one that decodes after all is copied
            if (w, h) != rec.size:
                raise VOCError(f"{src}: image is now {w}×{h}, the project has it as {rec.width}×{rec.height}")
        written[voc_id] = WrittenJpeg.of(data, rec.height, rec.width, copied=True)
    else:
        image = project.read_image(rec)
        data = _encode_jpeg(image)
        written[voc_id] = WrittenJpeg.of(data, *image.shape[:2], copied=False)
    _write(jpg, data)
    _write(stage / CLASS_DIR / f"{voc_id}.png", encode_label_png(labels, palettes.classes))
    if objects:
        inst, dropped = object_map(labels)
        _write(stage / OBJECT_DIR / f"{voc_id}.png", encode_label_png(inst, palettes.objects))
        summary.objects_dropped += dropped
    summary.jpegs_copied += written[voc_id].copied
    summary.images_converted += not written[voc_id].copied
    return label_digest(labels)


def export_voc(project: Project, out_dir: str | Path, *, val_fraction: float = 0.2, seed: int = 0,
               statuses: Iterable[Status | str] = DEFAULT_STATUSES, objects: bool = False,
               progress: Progress | None = None, layout: str = "flat",
               replace_other: bool = False) -> ExportSummary:
    """Write the project's label maps with the chosen statuses as a VOC dataset at `out_dir`
    (layout `flat`) or `out_dir/VOCdevkit/VOC2012` (layout `devkit`, torchvision's root = `out_dir`).

    An image that fails (unreadable, damaged, out of memory...) is listed in `summary.failed` and
    the others are exported; the run stops only on a whole-run failure (target refused, staging
    not writable, nothing exportable, the self-check). `replace_other` allows replacing an export
    written by another project (see `voc_target`)."""
    t0 = time.perf_counter()
    wanted = parse_statuses(statuses)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    destination = Path(out_dir).expanduser().resolve()
    root = voc_root_for(destination, layout)
    check_destination(destination, layout)
    check_target(project, root, replace_other=replace_other)
    chosen, skipped = [], {}
    for rec in project.records:
        if rec.status in wanted and project.has_annotation(rec):
            chosen.append(rec)
        else:
            skipped[rec.status.value] = skipped.get(rec.status.value, 0) + 1
    if not chosen:
        raise VOCError(f"{project.folder}: no images with status {', '.join(s.value for s in wanted)} to export")
    ids = make_ids([r.path for r in chosen])
    summary = ExportSummary(root, [], [], [], len(project.labels), skipped=skipped, destination=destination,
                            layout=layout)
    with staging(root, _StageWriteError, VOCError) as stage:
        expected: dict[str, str] = {}
        written: dict[str, WrittenJpeg] = {}
        palettes = _Palettes(PngPalette(project.labels.palette()), PngPalette(voc_colormap()))
        done = []
        for k, rec in enumerate(chosen):
            voc_id = ids[rec.path]
            if progress:
                progress(k, len(chosen), shown(rec.path))
            try:
                expected[voc_id] = _export_one(project, rec, stage, voc_id, objects, summary, written, palettes)
                done.append(rec)
            except _StageWriteError:
                raise
            except Exception as exc:  # noqa: BLE001 - one image's failure (MemoryError included)
                written.pop(voc_id, None)
                summary.failed.append((shown(rec.path), _failure(project.image_path(rec), exc)))
                for sub, ext in ((JPEG_DIR, ".jpg"), (CLASS_DIR, ".png"), (OBJECT_DIR, ".png")):
                    (stage / sub / f"{voc_id}{ext}").unlink(missing_ok=True)
        if not done:
            first = summary.failed[0][1]
            raise VOCError(f"{root}: none of the {len(chosen)} images could be exported, nothing was written "
                           f"(first: {first})")
        summary.ids = sorted(ids[r.path] for r in done)
        summary.train, summary.val = split_ids(summary.ids, val_fraction, seed)
        for name, members in (("train", summary.train), ("val", summary.val), ("trainval", summary.ids)):
            _write(stage / SPLIT_DIR / f"{name}.txt", "".join(f"{i}\n" for i in members))
        _write(stage / CLASS_NAMES_FILE, class_names_text(project.labels))
        _write(stage / LABELMAP_FILE, labelmap_text(project.labels))
        _write(stage / MARKER_FILE, marker_text(
            project, {ids[r.path]: r.path for r in done}, statuses=[s.value for s in wanted],
            val_fraction=val_fraction, seed=seed, objects=objects, layout=layout))
        if progress:
            progress(len(chosen), len(chosen), "checking the export")
        try:
            check_export(stage, expected=expected, objects=objects, written=written)
        except ExportCheckError as exc:  # told in the user's terms: the staging folder is deleted
            raise _check_failed(exc, stage, root, {ids[r.path]: project.image_path(r) for r in done}) from None
        swap_into_place(stage, root)
    summary.seconds = time.perf_counter() - t0
    return summary


def _check_failed(exc: ExportCheckError, stage: Path, out_dir: Path, sources: dict[str, Path]) -> ExportCheckError:
    src = sources.get(exc.path.stem) if exc.path is not None else None
    what = str(exc).replace(f"{stage}{os.sep}", "").replace(str(stage), ".")
    return ExportCheckError(f"{out_dir}: the export failed its self-check and was not written: {what}"
                            + (f" (source image {src})" if src is not None else ""), exc.path)
