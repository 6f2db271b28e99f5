"""The Pascal VOC folder layout: names, class files, ids, splits (shared by export and import).

```
ROOT/JPEGImages/<id>.jpg                RGB JPEG
ROOT/SegmentationClass/<id>.png         mode P, pixel = class index, 255 = void
ROOT/SegmentationObject/<id>.png        optional, pixel = instance number, 255 = void
ROOT/ImageSets/Segmentation/{train,val,trainval}.txt   one id per line
ROOT/class_names.txt                    one class name per line, index order
ROOT/labelmap.txt                       `name:r,g,b::` per class (CVAT's VOC labelmap), then
                                        `ignored:224,224,192::`: the void colour declared
ROOT/dataset_meta.json                  Datumaro's class list and colours (read, never written)
```

A labelmap entry named `ignored` or `void` (any case) is the void declaration: its pixels are 255,
it is no class. Datumaro and CVAT look every mask colour up in labelmap.txt and refuse a colour it
does not declare, so the export declares the void colour there under Datumaro's name for it.

Two layouts: `flat` (ROOT is the destination itself) and `devkit` (ROOT is
`<destination>/VOCdevkit/VOC2012`, what `torchvision.datasets.VOCSegmentation(root=<destination>,
year="2012")` expects). Ids are ASCII; a file name that is not valid UTF-8 gets `_` and a short hash
of its bytes appended, so ids stay unique and ImageSets/*.txt stay UTF-8.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from deeplab_studio.core.labels import IGNORE_COLOR, MAX_CLASSES, LabelSet, LabelSetError
from deeplab_studio.storage.formats.base import FormatError, unique_names

JPEG_DIR = "JPEGImages"
CLASS_DIR = "SegmentationClass"
OBJECT_DIR = "SegmentationObject"
SPLIT_DIR = Path("ImageSets") / "Segmentation"
CLASS_NAMES_FILE = "class_names.txt"
LABELMAP_FILE = "labelmap.txt"
LABELMAP_HEADER = "# label:color_rgb:parts:actions"
META_FILE = "dataset_meta.json"
VOID_ENTRY = "ignored"  # Datumaro's name for VOC's 255
_VOID_NAMES = {"ignored", "ignore", "void"}
SPLITS = ("train", "val", "trainval")
DEVKIT_SUBDIR = Path("VOCdevkit") / "VOC2012"
LAYOUTS = ("devkit", "flat")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_UNSAFE_ID_RE = re.compile(r"[/\\:\x00-\x1f\x7f]")
_UNDECODABLE_RE = re.compile("[\udc80-\udcff]")


class VOCError(FormatError):
    """A VOC folder that cannot be written or read (one clear message naming the file)."""


def shown(text: str | Path) -> str:
    """`text` safe to print or show: undecodable file-name bytes (surrogate escapes) as `\\xNN`."""
    try:
        return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def voc_root_for(destination: str | Path, layout: str) -> Path:
    """The VOC root a `layout` export to `destination` writes (`destination` itself when flat)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (use {' or '.join(LAYOUTS)})")
    return Path(destination) / DEVKIT_SUBDIR if layout == "devkit" else Path(destination)


def make_ids(rel_paths: list[str]) -> dict[str, str]:
    """Filesystem-safe, unique (also case-insensitively) ASCII VOC ids for relative image paths, in
    order: `sub/dir/img 1.png` → `sub_dir_img_1`; a clash gets `_2`, `_3`, ...; a path that is not
    valid UTF-8 (surrogate escapes) gets `_` + 6 hex digits of its bytes' hash (`caf\\xe9.png` →
    `caf_<hash>`), so it never takes the id of a readable name."""
    return unique_names((rel, _id_base(rel)) for rel in rel_paths)


def _id_base(rel: str) -> str:
    """The id `make_ids` wants for `rel` before clashes are resolved."""
    stem = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem.replace("/", "_")).strip("._-")[:100] or "image"
    if _UNDECODABLE_RE.search(rel):
        base += "_" + hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:6]
    if base.split(".")[0].upper() in _WINDOWS_RESERVED:
        base += "_"
    return base


def is_safe_id(voc_id: str) -> bool:
    """True for an id that names a file inside its folder: no separators, drive colons or control
    characters, not hidden, no `..`. Non-ASCII ids (and undecodable bytes read from a split file
    as surrogate escapes) are fine."""
    return bool(voc_id) and len(voc_id) <= 200 and not voc_id.startswith(".") and ".." not in voc_id and (
        not _UNSAFE_ID_RE.search(voc_id))


def split_ids(ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val), each sorted. Ids are ranked by a seeded hash, the first `round(n·f)` go to val
    (at least one of each when 0 < f and n ≥ 2), so the split is reproducible and an id rarely
    changes side when images are added."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    n = len(ids)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    val = set(ranked[:n_val])
    return sorted(i for i in ids if i not in val), sorted(val)


def labelmap_text(labels: LabelSet) -> str:
    """labelmap.txt: one `name:r,g,b::` line per class, then the void declaration."""
    lines = [LABELMAP_HEADER] + [f"{n}:{r},{g},{b}::" for n, (r, g, b) in zip(labels.names, labels.colors)]
    lines.append(f"{VOID_ENTRY}:{','.join(str(v) for v in IGNORE_COLOR)}::")
    return "\n".join(lines) + "\n"


def is_void_entry(name: str) -> bool:
    """True for a class-file entry that declares void (255), not a class."""
    return name.strip().casefold() in _VOID_NAMES


def class_names_text(labels: LabelSet) -> str:
    return "\n".join(labels.names) + "\n"


def _read_lines(path: Path, *, file_names: bool = False) -> list[tuple[int, str]]:
    """Non-empty, non-comment lines (number, stripped text). With `file_names`, bytes that are not
    UTF-8 are kept as surrogate escapes (as `os.fsdecode` gives), so such ids name their files."""
    try:
        text = path.read_bytes().decode("utf-8-sig", "surrogateescape" if file_names else "strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise VOCError(f"{path}: cannot read ({exc})") from None
    return [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.lstrip().startswith("#")]


def parse_labelmap_entries(path: Path) -> list[tuple[str, tuple[int, int, int] | None]]:
    """(name, colour or None) per line of a `name:r,g,b:parts:actions` labelmap file, in order
    (an empty colour field, as Datumaro writes for uncoloured labels, is None)."""
    entries: list[tuple[str, tuple[int, int, int] | None]] = []
    for lineno, line in _read_lines(path):
        parts = line.split(":")
        name = parts[0].strip()
        try:
            rgb = tuple(int(v) for v in parts[1].split(",")) if parts[1].strip() else None
        except (IndexError, ValueError):
            rgb = ()
        if not name or len(parts) < 2 or len(parts) > 4 or rgb == () or (
                rgb is not None and (len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb))):
            raise VOCError(f"{path}:{lineno}: expected 'name:r,g,b::', got {line!r}")
        if any(name == have for have, _ in entries):
            raise VOCError(f"{path}:{lineno}: class {name!r} is listed twice")
        entries.append((name, rgb))
    return entries


def parse_labelmap(path: Path) -> LabelSet:
    """Classes and colours from a labelmap file (the void declaration left out)."""
    entries = [(n, c) for n, c in parse_labelmap_entries(path) if not is_void_entry(n)]
    if any(c is None for _, c in entries):
        return _labelset(path, [n for n, _ in entries], [])
    return _labelset(path, [n for n, _ in entries], [c for _, c in entries])


def parse_meta_entries(path: Path) -> list[tuple[str, tuple[int, int, int] | None]]:
    """(name, colour or None) per class of Datumaro's dataset_meta.json (`label_map` in key order
    with `segmentation_colors`, else `labels`)."""
    try:
        doc = json.loads(path.read_text("utf-8"))
        label_map = doc.get("label_map")
        if isinstance(label_map, dict) and label_map:
            names = [str(label_map[k]) for k in sorted(label_map, key=int)]
        else:
            names = [str(n) for n in doc["labels"]]
        colors = doc.get("segmentation_colors") or []
        out = []
        for i, name in enumerate(names):
            c = colors[i] if i < len(colors) else None
            rgb = None if c is None else tuple(int(v) for v in c)
            if rgb is not None and (len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb)):
                raise ValueError(f"bad colour {c!r} for {name!r}")
            out.append((name, rgb))
    except (OSError, UnicodeDecodeError) as exc:
        raise VOCError(f"{path}: cannot read ({exc})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VOCError(f"{path}: not a Datumaro dataset_meta.json ({type(exc).__name__}: {exc})") from None
    if not out:
        raise VOCError(f"{path}: lists no classes")
    return out


def parse_class_names(path: Path) -> LabelSet:
    return _labelset(path, [line for _, line in _read_lines(path)], [])


def _labelset(path: Path, names: list[str], colors: list) -> LabelSet:
    if len(names) > MAX_CLASSES:
        raise VOCError(f"{path}: {len(names)} classes, at most {MAX_CLASSES} fit (255 is void)")
    try:
        return LabelSet(names, colors)
    except LabelSetError as exc:
        raise VOCError(f"{path}: {exc}") from None


def read_split(root: Path, split: str) -> list[str]:
    """Ids listed in ImageSets/Segmentation/<split>.txt (validated, in file order, no duplicates)."""
    path = root / SPLIT_DIR / f"{split}.txt"
    ids = []
    for lineno, line in _read_lines(path, file_names=True):
        voc_id = line.split()[0]
        if not is_safe_id(voc_id):
            raise VOCError(f"{path}:{lineno}: unsafe image id {voc_id!r}")
        ids.append(voc_id)
    if len(set(ids)) != len(ids):
        raise VOCError(f"{path}: lists an id twice")
    return ids


def find_voc_root(path: str | Path) -> Path:
    """The folder holding JPEGImages/ and SegmentationClass/: `path` itself, `path/VOC2012` or
    `path/VOCdevkit/VOC2012` (the original devkit layout)."""
    path = Path(path).expanduser()
    candidates = [path, path / "VOC2012", path / DEVKIT_SUBDIR]
    for c in candidates:
        if (c / JPEG_DIR).is_dir() and (c / CLASS_DIR).is_dir():
            return c.resolve()
    if not path.exists():
        raise VOCError(f"{path}: no such folder")
    raise VOCError(f"{path}: not a VOC dataset (no {JPEG_DIR}/ and {CLASS_DIR}/ here, in VOC2012/ or "
                   "in VOCdevkit/VOC2012/)")
