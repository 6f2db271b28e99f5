"""Pascal VOC export (with a self-check) and import; the layout is described in `voc_format`.

Export writes the whole dataset into a hidden staging folder beside `out_dir`, re-reads and checks
it, and only then moves it into place (replacing a previous export), so a failed or interrupted
export never leaves a half-written dataset under `out_dir`. Staged files are not fsync'ed one by one
(that dominated export time); the swap is a rename, and an export can always be re-run. Staging
folders left by a killed export are removed by the next export to the same folder.

- `JPEGImages/<id>.jpg`: a source JPEG is copied byte for byte when it is upright (no EXIF
  rotation, which VOC readers ignore) and RGB or grayscale; anything else is decoded once with
  `read_image` and written as JPEG quality 95, 4:4:4.
- `SegmentationClass/<id>.png`: mode P with the project's class colours, 255 = void.
- `SegmentationObject/<id>.png` (`objects=True`): connected components (8-connected) of each
  class, numbered 1.. in class order then raster order; 255 where the class map is void. VOC
  stores instance numbers in 8 bits: components beyond the 254th are written as 255 (void) and
  counted in `ExportSummary.objects_dropped`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_studio.core.labels import IGNORE, voc_colormap
from deeplab_studio.storage.atomic import pid_alive
from deeplab_studio.storage.images import ImageReadError, open_limited, probe_image, read_image
from deeplab_studio.storage.labelmaps import encode_label_png
from deeplab_studio.storage.project import Project, Status
from deeplab_studio.storage.voc_format import (
    CLASS_DIR, CLASS_NAMES_FILE, JPEG_DIR, LABELMAP_FILE, OBJECT_DIR, SPLIT_DIR, SPLITS, VOCError, class_names_text,
    labelmap_text, make_ids, parse_class_names, parse_labelmap, read_split, split_ids)
from deeplab_studio.storage.voc_import import ImportSummary, import_voc  # noqa: F401  (public API)

DEFAULT_STATUSES: tuple[Status, ...] = (Status.REVIEWED, Status.EDITED, Status.AUTO)
MARKER_FILE = ".deeplab-studio-export.json"
Progress = Callable[[int, int, str], None]


class ExportCheckError(VOCError):
    """The written dataset failed its self-check (names the file and what is wrong)."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path  # the file that failed, when one did


@dataclass
class ExportSummary:
    out_dir: Path
    ids: list[str]
    train: list[str]
    val: list[str]
    num_classes: int
    jpegs_copied: int = 0
    images_converted: int = 0
    objects_dropped: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # status -> images left out
    seconds: float = 0.0


@dataclass
class CheckReport:
    ids: list[str]
    splits: dict[str, list[str]]
    num_classes: int


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


def _encode_jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def _write(path: Path, data: bytes | str) -> None:
    """Write into the staging folder: no per-file fsync (the folder is swapped in whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(arr).tobytes() + str(arr.shape).encode()).hexdigest()


_EXPORT_ENTRIES = {JPEG_DIR, CLASS_DIR, OBJECT_DIR, "ImageSets", CLASS_NAMES_FILE, LABELMAP_FILE, MARKER_FILE}


def _prepare_out_dir(project: Project, out_dir: Path) -> None:
    """Refuse targets inside the image folder, above it, or holding anything but a previous export."""
    inside = out_dir.is_relative_to(project.folder)
    if inside and not any(part.startswith(".") for part in out_dir.relative_to(project.folder).parts) or (
            project.folder.is_relative_to(out_dir)):
        raise VOCError(f"{out_dir}: the export folder must be outside the image folder {project.folder} "
                       "(its JPEGs would become project images)" if inside else
                       f"{out_dir}: the export folder cannot contain the image folder {project.folder}")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise VOCError(f"{out_dir}: exists and is not a folder")
        entries = {p.name for p in out_dir.iterdir()}
        if entries and MARKER_FILE not in entries:
            raise VOCError(f"{out_dir}: folder is not empty and not a previous DeepLab Studio export; "
                           "choose an empty or new folder")
        if entries - _EXPORT_ENTRIES:
            raise VOCError(f"{out_dir}: a previous export, but it also holds {', '.join(sorted(entries - _EXPORT_ENTRIES))}; "
                           "move those away or choose another folder (the export replaces the folder)")


def export_voc(project: Project, out_dir: str | Path, *, val_fraction: float = 0.2, seed: int = 0,
               statuses: Iterable[Status | str] = DEFAULT_STATUSES, objects: bool = False,
               progress: Progress | None = None) -> ExportSummary:
    """Write the project's label maps with the chosen statuses as a VOC dataset rooted at `out_dir`."""
    t0 = time.perf_counter()
    wanted = parse_statuses(statuses)
    out_dir = Path(out_dir).expanduser().resolve()
    _prepare_out_dir(project, out_dir)
    chosen, skipped = [], {}
    for rec in project.records:
        if rec.status in wanted and project.has_annotation(rec):
            chosen.append(rec)
        else:
            skipped[rec.status.value] = skipped.get(rec.status.value, 0) + 1
    if not chosen:
        raise VOCError(f"{project.folder}: no images with status {', '.join(s.value for s in wanted)} to export")
    ids = make_ids([r.path for r in chosen])
    train, val = split_ids(list(ids.values()), val_fraction, seed)
    n_classes = len(project.labels)
    summary = ExportSummary(out_dir, sorted(ids.values()), train, val, n_classes, skipped=skipped)
    stage = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        stage.mkdir(parents=True)
    except OSError as exc:
        raise VOCError(f"{out_dir}: cannot write the export there ({exc.strerror or exc})") from None
    _remove_dead_stages(out_dir)
    try:
        expected: dict[str, str] = {}
        palette = project.labels.palette()
        for k, rec in enumerate(chosen):
            voc_id = ids[rec.path]
            if progress:
                progress(k, len(chosen), rec.path)
            labels, _ = project.load_annotation(rec)
            bad = (labels >= n_classes) & (labels != IGNORE)
            if bad.any():
                raise VOCError(f"{project.image_path(rec)}: its label map uses class {int(labels[bad].max())}, "
                               f"the project has {n_classes} classes")
            src = project.image_path(rec)
            jpg = stage / JPEG_DIR / f"{voc_id}.jpg"
            if _can_copy_jpeg(src, rec.size):
                jpg.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, jpg)
                summary.jpegs_copied += 1
            else:
                _write(jpg, _encode_jpeg(project.read_image(rec)))
                summary.images_converted += 1
            _write(stage / CLASS_DIR / f"{voc_id}.png", encode_label_png(labels, palette))
            expected[voc_id] = _digest(labels)
            if objects:
                inst, dropped = object_map(labels)
                summary.objects_dropped += dropped
                _write(stage / OBJECT_DIR / f"{voc_id}.png", encode_label_png(inst, voc_colormap()))
        for name, members in (("train", train), ("val", val), ("trainval", summary.ids)):
            _write(stage / SPLIT_DIR / f"{name}.txt", "".join(f"{i}\n" for i in members))
        _write(stage / CLASS_NAMES_FILE, class_names_text(project.labels))
        _write(stage / LABELMAP_FILE, labelmap_text(project.labels))
        _write(stage / MARKER_FILE, json.dumps({
            "format_version": 1, "source": str(project.folder), "statuses": [s.value for s in wanted],
            "val_fraction": val_fraction, "seed": seed, "objects": objects, "sources": {
                ids[r.path]: r.path for r in chosen}}, indent=1))
        if progress:
            progress(len(chosen), len(chosen), "checking the export")
        try:
            check_export(stage, expected=expected, objects=objects)
        except ExportCheckError as exc:  # told in the user's terms: the staging folder is deleted
            raise _check_failed(exc, stage, out_dir, {ids[r.path]: project.image_path(r) for r in chosen}) from None
        _swap_into_place(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    summary.seconds = time.perf_counter() - t0
    return summary


def _check_failed(exc: ExportCheckError, stage: Path, out_dir: Path, sources: dict[str, Path]) -> ExportCheckError:
    src = sources.get(exc.path.stem) if exc.path is not None else None
    what = str(exc).replace(f"{stage}{os.sep}", "").replace(str(stage), ".")
    return ExportCheckError(f"{out_dir}: the export failed its self-check and was not written: {what}"
                            + (f" (source image {src})" if src is not None else ""), exc.path)


_STAGE_RE = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def _remove_dead_stages(out_dir: Path) -> None:
    """Delete staging/old folders of earlier exports to `out_dir` whose process was killed."""
    try:
        entries = list(out_dir.parent.iterdir())
    except OSError:
        return
    for p in entries:
        m = _STAGE_RE.match(p.name)
        if m and m["name"] == out_dir.name and p.is_dir() and not pid_alive(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)


def _swap_into_place(stage: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(out_dir, old)
    os.replace(stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_export(out_dir: str | Path, *, expected: dict[str, str] | None = None, objects: bool | None = None) -> CheckReport:
    """Re-read a VOC folder completely and check it; raises `ExportCheckError` on the first problem.

    Checks the class files agree, the splits partition trainval, every JPEG decodes fully, every
    class map is mode P, the image's size, and uses only known classes or 255; object maps (when
    present) match their class maps; with `expected` (id -> digest), the label pixels are exact.
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
        try:
            if probe_image(jpg).format != "JPEG":
                fail(jpg, "not a JPEG file")
            h, w = read_image(jpg).shape[:2]
        except ImageReadError as exc:
            raise ExportCheckError(str(exc), exc.path) from None
        labels = _read_p_png(png, fail)
        if labels.shape != (h, w):
            fail(png, f"is {labels.shape[1]}×{labels.shape[0]}, its image is {w}×{h}")
        if ((labels >= n) & (labels != IGNORE)).any():
            fail(png, f"uses class {int(labels[labels != IGNORE].max())}, there are {n} classes")
        if expected is not None and _digest(labels) != expected[voc_id]:
            fail(png, "label pixels differ from the project's label map")
        if has_objects:
            obj = _read_p_png(root / OBJECT_DIR / f"{voc_id}.png", fail)
            if obj.shape != labels.shape or ((obj == 0) != (labels == 0)).any() or (
                    (labels == IGNORE) & (obj != IGNORE)).any():
                fail(root / OBJECT_DIR / f"{voc_id}.png", "does not match its class map")
    return CheckReport(tv, splits, n)


def _read_p_png(path: Path, fail) -> np.ndarray:
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


def export_marker(out_dir: str | Path) -> dict | None:
    """The export's metadata (source folder, statuses, seed, id → source path), or None."""
    try:
        return json.loads((Path(out_dir) / MARKER_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
