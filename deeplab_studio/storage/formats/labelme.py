"""labelme / X-AnyLabeling JSON folders: the reader (the writer is in `labelme_writer`).

A dataset is a folder of `*.json` files (subfolders too; each file's key is its path without
`.json`), one per image: `imagePath` (relative to the JSON), `imageHeight`/`imageWidth`,
`shapes`, and optionally `imageData` (the image, base64). Shapes are drawn as labelme2voc draws
them (see `labelme_shapes`), in the frame the tool showed (see `contours`: files EXIF-rotated,
embedded images as stored). `__ignore__` is void (255), `_background_` is 0; X-AnyLabeling's extra
keys (`description`, `difficult`, `attributes`, `score`, `direction`...) are ignored.

The image: the file `imagePath` names, else a file of that name or of the JSON's stem beside the
JSON; when the JSON embeds `imageData` and no such file fits the declared size, the embedded image
is decoded into a temporary folder (removed when the process exits) so the import can copy a real
file. Classes: `labels.txt` (labelme2voc's: `__ignore__`, `_background_`, then the classes) or
X-AnyLabeling's `classes.txt` in the folder (or a `labels.txt` starting that way in the folder
above, labelme's example layout); else the labels in order of appearance, background first.
Labels the file does not list are added after its classes. A file that is not valid JSON, or
that has a shape that cannot be drawn, is named in `problems` (with the shape) and left out.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np
from PIL import Image

from deeplab_studio.core.labels import IGNORE, MAX_CLASSES
from deeplab_studio.storage.formats.base import FormatError, SourceDataset, SourceItem
from deeplab_studio.storage.formats.contours import drawing_frame
from deeplab_studio.storage.formats.labelme_shapes import (
    BACKGROUND_LABEL, IGNORE_LABEL, Shape, ShapeError, paint, parse_shape)
from deeplab_studio.storage.formats.labelme_writer import WRITER  # noqa: F401  (the registry's)
from deeplab_studio.storage.images import IMAGE_EXTENSIONS, ImageReadError, probe_image

LABELS_FILES = ("labels.txt", "classes.txt")
_SNIFF_BYTES = 1 << 16
_EMBEDDED_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
_cache_dirs: list[str] = []


def looks_like_labelme(path: Path) -> bool:
    """True when the start of the JSON file `path` has labelme's keys (`shapes`, or `imagePath`
    with `imageData`) and none of COCO's `images`."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    if b'"images"' in head:
        return False
    return b'"shapes"' in head or (b'"imagePath"' in head and b'"imageData"' in head)


def _json_files(root: Path) -> list[Path]:
    """The `*.json` files under `root`, hidden folders skipped, in sorted order."""
    out: list[Path] = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(files)
                   if f.lower().endswith(".json") and not f.startswith("."))
    return out


# ---------------------------------------------------------------------------------------------
# labels


@dataclass
class LabelmeLabels:
    """The picklable label reader of one JSON file: its checked shapes painted in order."""

    json_path: Path
    image: Path
    shapes: list[Shape]
    values: list[int]
    declared: tuple[int, int] | None  # (imageWidth, imageHeight) when the file states them
    embedded: bool  # the image is the file's imageData (shown as stored, EXIF not applied)

    def __call__(self) -> np.ndarray:
        try:
            info = probe_image(self.image)
        except ImageReadError as exc:
            raise FormatError(str(exc)) from None
        frame = drawing_frame(info, self.declared, shown_as_stored=self.embedded, what=str(self.json_path))
        canvas = Image.new("L", frame.size, 0)
        try:
            paint(canvas, self.shapes, self.values)
        except ShapeError as exc:
            raise FormatError(f"{self.json_path}: {exc}") from None
        return frame.to_displayed(np.asarray(canvas))


# ---------------------------------------------------------------------------------------------
# images


def _cache_dir() -> Path:
    """A temporary folder for embedded images, removed when the process exits."""
    if not _cache_dirs:
        _cache_dirs.append(tempfile.mkdtemp(prefix="deeplab-studio-labelme-"))
        atexit.register(shutil.rmtree, _cache_dirs[0], True)
    return Path(_cache_dirs[0])


def decode_embedded(data_b64: str, key: str) -> Path:
    """Write a file's `imageData` as an image file (extension from its content); FormatError."""
    try:
        data = base64.b64decode(data_b64, validate=False)
        with Image.open(io.BytesIO(data)) as im:
            kind = im.format
    except (binascii.Error, OSError, ValueError) as exc:
        raise FormatError(f"imageData is not a base64 image ({exc})") from None
    ext = _EMBEDDED_EXT.get(kind or "")
    if ext is None:
        raise FormatError(f"imageData is a {kind} image, which this app does not read")
    path = Path(tempfile.mkdtemp(dir=_cache_dir())) / (key.rsplit("/", 1)[-1] + ext)
    path.write_bytes(data)
    return path


def _candidates(json_path: Path, image_path: object) -> list[Path]:
    """Where the image may be: `imagePath` as written, its name beside the JSON, the JSON's stem."""
    out: list[Path] = []
    if isinstance(image_path, str) and image_path.strip():
        rel = PureWindowsPath(image_path)  # labelme on Windows writes backslashes
        if not rel.is_absolute() and not rel.drive:
            out.append(json_path.parent / rel.as_posix())
        out.append(json_path.parent / rel.name)
    out.extend(json_path.with_suffix(ext) for ext in IMAGE_EXTENSIONS)
    out.extend(json_path.with_suffix(ext.upper()) for ext in IMAGE_EXTENSIONS)
    return list(dict.fromkeys(out))


def _fits(image: Path, declared: tuple[int, int] | None) -> bool:
    try:
        drawing_frame(probe_image(image), declared)
    except (ImageReadError, FormatError):
        return False
    return True


def _find_image(json_path: Path, doc: dict, declared: tuple[int, int] | None, key: str) -> tuple[Path, bool]:
    """(image file, embedded?) for one JSON file; FormatError when there is none."""
    found = next((p for p in _candidates(json_path, doc.get("imagePath")) if p.is_file()), None)
    data = doc.get("imageData")
    if isinstance(data, str) and data and (found is None or not _fits(found, declared)):
        return decode_embedded(data, key), True
    if found is None:
        raise FormatError(f"image {doc.get('imagePath')!r} not found beside the JSON, and no imageData")
    return found, False


# ---------------------------------------------------------------------------------------------
# the index


@dataclass
class _Entry:
    key: str
    json_path: Path
    image: Path
    shapes: list[Shape]
    declared: tuple[int, int] | None
    embedded: bool


def _declared_size(doc: dict) -> tuple[int, int] | None:
    w, h = doc.get("imageWidth"), doc.get("imageHeight")
    if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
        return (w, h)
    return None


def _index_file(json_path: Path, key: str) -> _Entry:
    """One JSON file checked and indexed; FormatError says what is wrong (with the shapes)."""
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise FormatError("not a labelme file: no 'shapes' list")
    shapes, bad = [], []
    for i, obj in enumerate(doc["shapes"]):
        try:
            shapes.append(parse_shape(obj, i))
        except ShapeError as exc:
            bad.append(str(exc))
    if bad:
        more = f"; and {len(bad) - 3} more bad shapes" if len(bad) > 3 else ""
        raise FormatError("; ".join(bad[:3]) + more)
    declared = _declared_size(doc)
    image, embedded = _find_image(json_path, doc, declared, key)
    return _Entry(key, json_path, image, shapes, declared, embedded)


def _labels_file(root: Path) -> Path | None:
    """labels.txt / classes.txt in `root`, else a labelme2voc `labels.txt` in the folder above."""
    for name in LABELS_FILES:
        if (root / name).is_file():
            return root / name
    above = root.parent / LABELS_FILES[0]
    if above.is_file() and above != root / LABELS_FILES[0]:
        try:
            first = above.read_text(encoding="utf-8-sig").split("\n", 1)[0].strip()
        except (OSError, UnicodeDecodeError):
            return None
        if first in (IGNORE_LABEL, BACKGROUND_LABEL):
            return above
    return None


def class_names(root: Path, seen: list[str]) -> tuple[list[str], list[str], bool]:
    """(class names, notes, declared): background first, then the listed or `seen` labels."""
    path = _labels_file(root)
    listed: list[str] = []
    notes: list[str] = []
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path}: cannot read the class list ({exc})") from None
        listed = [s.strip() for s in lines if s.strip()]
        notes.append(f"classes: {os.path.relpath(path, root)}")
    else:
        notes.append("classes: no labels.txt, the labels in order of appearance")
    names = [BACKGROUND_LABEL]
    for n in listed + seen:
        if n not in (IGNORE_LABEL, BACKGROUND_LABEL) and n not in names:
            names.append(n)
    extra = [n for n in names[1:] if n not in listed]
    if path is not None and extra:
        notes.append(f"labels not in {path.name}, added after its classes: {', '.join(extra)}")
    if len(names) > MAX_CLASSES:
        raise FormatError(f"{root}: {len(names)} classes, at most {MAX_CLASSES} fit a label map")
    return names, notes, path is not None


def _value(names: dict[str, int], label: str) -> int:
    if label == IGNORE_LABEL:
        return IGNORE
    return names[label]


class LabelmeReader:
    name = "labelme"
    title = "labelme / X-AnyLabeling JSON"

    def detect(self, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            return path.suffix.lower() == ".json" and looks_like_labelme(path)
        if not path.is_dir():
            return False
        tops = [p for p in sorted(path.glob("*.json")) if not p.name.startswith(".")][:20]
        if not tops:  # one level down: folders per split or per batch
            tops = [p for p in sorted(path.glob("*/*.json")) if not p.name.startswith((".", "_"))][:20]
        return any(looks_like_labelme(p) for p in tops)

    def read(self, path: Path) -> SourceDataset:
        path = Path(path)
        if path.is_file():
            root, files = path.parent, [path]
        elif path.is_dir():
            root, files = path, _json_files(path)
        else:
            raise FormatError(f"{path}: no such file or folder")
        entries: list[_Entry] = []
        problems: list[tuple[str, str]] = []
        for f in sorted(files, key=lambda f: f.relative_to(root).as_posix()):
            key = f.relative_to(root).with_suffix("").as_posix()
            try:
                entries.append(_index_file(f, key))
            except FormatError as exc:
                problems.append((key, f"{f.relative_to(root).as_posix()}: {exc}"))
        if not entries and not any(looks_like_labelme(f) for f in files):
            raise FormatError(f"{path}: no labelme JSON files found")
        seen = list(dict.fromkeys(s.label for e in entries for s in e.shapes))
        names, notes, declared = class_names(root, seen)
        lookup = {n: i for i, n in enumerate(names)}
        items = [SourceItem(e.key, e.image, LabelmeLabels(e.json_path, e.image, e.shapes,
                                                          [_value(lookup, s.label) for s in e.shapes],
                                                          e.declared, e.embedded)) for e in entries]
        if any(e.embedded for e in entries):
            notes.append(f"{sum(e.embedded for e in entries)} images decoded from the files' imageData")
        return SourceDataset(self.name, root, names, None, items, problems, notes, declared)


READER = LabelmeReader()
