"""The Pascal VOC folder layout: names, class files, ids, splits (shared by export and import).

```
ROOT/JPEGImages/<id>.jpg                RGB JPEG
ROOT/SegmentationClass/<id>.png         mode P, pixel = class index, 255 = void
ROOT/SegmentationObject/<id>.png        optional, pixel = instance number, 255 = void
ROOT/ImageSets/Segmentation/{train,val,trainval}.txt   one id per line
ROOT/class_names.txt                    one class name per line, index order
ROOT/labelmap.txt                       `name:r,g,b::` per class (CVAT's VOC labelmap)
```

Two layouts: `flat` (ROOT is the destination itself) and `devkit` (ROOT is
`<destination>/VOCdevkit/VOC2012`, what `torchvision.datasets.VOCSegmentation(root=<destination>,
year="2012")` expects). Ids are ASCII; a file name that is not valid UTF-8 gets `_` and a short hash
of its bytes appended, so ids stay unique and ImageSets/*.txt stay UTF-8.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from deeplab_studio.core.labels import MAX_CLASSES, LabelSet, LabelSetError

JPEG_DIR = "JPEGImages"
CLASS_DIR = "SegmentationClass"
OBJECT_DIR = "SegmentationObject"
SPLIT_DIR = Path("ImageSets") / "Segmentation"
CLASS_NAMES_FILE = "class_names.txt"
LABELMAP_FILE = "labelmap.txt"
LABELMAP_HEADER = "# label:color_rgb:parts:actions"
SPLITS = ("train", "val", "trainval")
DEVKIT_SUBDIR = Path("VOCdevkit") / "VOC2012"
LAYOUTS = ("devkit", "flat")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_UNSAFE_ID_RE = re.compile(r"[/\\:\x00-\x1f\x7f]")
_UNDECODABLE_RE = re.compile("[\udc80-\udcff]")


class VOCError(Exception):
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
    used: set[str] = set()
    ids: dict[str, str] = {}
    for rel in rel_paths:
        stem = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem.replace("/", "_")).strip("._-")[:100] or "image"
        if _UNDECODABLE_RE.search(rel):
            base += "_" + hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:6]
        if base.split(".")[0].upper() in _WINDOWS_RESERVED:
            base += "_"
        cand, n = base, 2
        while cand.casefold() in used:
            cand, n = f"{base}_{n}", n + 1
        used.add(cand.casefold())
        ids[rel] = cand
    return ids


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
    lines = [LABELMAP_HEADER] + [f"{n}:{r},{g},{b}::" for n, (r, g, b) in zip(labels.names, labels.colors)]
    return "\n".join(lines) + "\n"


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


def parse_labelmap(path: Path) -> LabelSet:
    """Classes and colours from a `name:r,g,b:parts:actions` labelmap file."""
    names, colors = [], []
    for lineno, line in _read_lines(path):
        parts = line.split(":")
        try:
            r, g, b = (int(v) for v in parts[1].split(","))
        except (IndexError, ValueError):
            raise VOCError(f"{path}:{lineno}: expected 'name:r,g,b::', got {line!r}") from None
        names.append(parts[0].strip())
        colors.append((r, g, b))
    return _labelset(path, names, colors)


def parse_class_names(path: Path) -> LabelSet:
    return _labelset(path, [line for _, line in _read_lines(path)], [])


def _labelset(path: Path, names: list[str], colors: list) -> LabelSet:
    if len(names) > MAX_CLASSES:
        raise VOCError(f"{path}: {len(names)} classes, at most {MAX_CLASSES} fit (255 is void)")
    try:
        return LabelSet(names, colors)
    except LabelSetError as exc:
        raise VOCError(f"{path}: {exc}") from None


def read_classes(root: Path) -> LabelSet | None:
    """The classes of a VOC folder from labelmap.txt (names + colours) and/or class_names.txt;
    None when it has neither (the caller falls back to the 21 VOC classes)."""
    lm, cn = root / LABELMAP_FILE, root / CLASS_NAMES_FILE
    from_lm = parse_labelmap(lm) if lm.is_file() else None
    from_cn = parse_class_names(cn) if cn.is_file() else None
    if from_lm and from_cn and from_lm.names != from_cn.names:
        raise VOCError(f"{root}: {LABELMAP_FILE} and {CLASS_NAMES_FILE} list different classes")
    return from_lm or from_cn


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
