"""Where a COCO dataset keeps things: its annotation files, their splits, images, and categories.

Annotation files: the file given, else `annotations/*.json` and `*.json` in the folder and
Roboflow's `*/_annotations.coco.json`; captions, keypoints and image-info files are passed over.
A file's split is its name without `instances_`/`panoptic_` (`train2017`), or, for Roboflow's
file, its folder's name. For a split with both, the panoptic file is read (it labels every pixel,
stuff included, and marks void); the others are named in the notes.

Images: `file_name` is looked up under `images/<split>/`, `images/`, `<split>/`, beside the JSON
and in the dataset folder, in that order.

Categories become class values by id order: a category called `background` (any case, `_`) is 0,
`__ignore__` is void (255), the others 1, 2... in order of their ids; categories of several
files are merged by name. A category no annotation uses whose name is another category's
supercategory (Roboflow's dataset-level category) is left out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from deeplab_studio.core.labels import IGNORE, MAX_CLASSES
from deeplab_studio.storage.formats.base import FormatError

IGNORE_CATEGORY = "__ignore__"
BACKGROUND = "background"
_SKIPPED_PREFIXES = ("captions_", "person_keypoints_", "image_info_")
_SNIFF_BYTES = 1 << 16
_KIND_PREFIX_RE = re.compile(r"^(instances|panoptic)_?", re.IGNORECASE)


@dataclass
class AnnotationFile:
    path: Path
    kind: str  # "instances" or "panoptic"
    split: str


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_SNIFF_BYTES)
    except OSError:
        return b""


def looks_like_coco(path: Path) -> bool:
    """True for a JSON file named `instances*`/`panoptic*`, or whose start has COCO's `images`
    with a `file_name` (and no labelme `shapes`)."""
    name = path.name.lower()
    if not name.endswith(".json") or name.startswith(_SKIPPED_PREFIXES):
        return False
    if name.startswith(("instances", "panoptic")):
        return True
    head = _head(path)
    return b'"images"' in head and b'"file_name"' in head and b'"shapes"' not in head


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.startswith("panoptic") or (not name.startswith("instances") and b'"segments_info"' in _head(path)):
        return "panoptic"
    return "instances"


def _split(path: Path) -> str:
    if path.name.lower().endswith(".coco.json"):  # Roboflow: train/_annotations.coco.json
        return path.parent.name
    return _KIND_PREFIX_RE.sub("", path.stem) or "default"


def find_annotation_files(path: Path) -> tuple[list[AnnotationFile], list[str]]:
    """(annotation files to read, notes) for a file or folder; FormatError when there are none."""
    if path.is_file():
        cands = [path]
    else:
        cands = [*sorted(path.glob("annotations/*.json")), *sorted(path.glob("*.json")),
                 *sorted(path.glob("*/_annotations.coco.json"))]
    files = [AnnotationFile(p, _kind(p), _split(p)) for p in cands
             if not p.name.startswith(".") and looks_like_coco(p)]
    if not files:
        raise FormatError(f"{path}: no COCO annotation file (instances*.json, panoptic*.json) found")
    chosen: dict[str, AnnotationFile] = {}
    notes: list[str] = []
    for f in files:
        have = chosen.get(f.split)
        if have is None or (have.kind == "instances" and f.kind == "panoptic"):
            if have is not None:
                notes.append(f"split {f.split}: {f.path.name} read (panoptic labels every pixel), "
                             f"{have.path.name} not")
            chosen[f.split] = f
        else:
            notes.append(f"split {f.split}: {f.path.name} not read ({have.path.name} is)")
    return list(chosen.values()), notes


def dataset_root(ann: Path) -> Path:
    """The dataset folder of an annotation file: above `annotations/`, else the file's folder."""
    return ann.parent.parent if ann.parent.name == "annotations" else ann.parent


def relative_name(file_name: object) -> str | None:
    """`file_name` as a safe relative posix path, or None (absolute, `..`, not a string)."""
    if not isinstance(file_name, str) or not file_name.strip():
        return None
    p = PureWindowsPath(file_name)
    posix = PurePosixPath(p.as_posix())
    if p.is_absolute() or p.drive or posix.is_absolute() or ".." in posix.parts:
        return None
    return posix.as_posix()


def find_image(ann: AnnotationFile, name: str) -> Path | None:
    root = dataset_root(ann.path)
    for folder in (root / "images" / ann.split, root / "images", root / ann.split, ann.path.parent, root):
        if (folder / name).is_file():
            return folder / name
    return None


# ---------------------------------------------------------------------------------------------
# the file and its images


def load_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise FormatError(f"{path}: not a COCO file (no 'images' list)")
    if not isinstance(doc.get("annotations", []), list):
        raise FormatError(f"{path}: 'annotations' is not a list")
    return doc


@dataclass
class ImageEntry:
    key: str
    image: Path
    size: tuple[int, int]
    id: int


def index_images(doc: dict, ann: AnnotationFile, prefix: str, rel: str,
                 problems: list[tuple[str, str]]) -> dict[int, ImageEntry]:
    """Image id → entry for the images whose file is found; the others go to `problems`."""
    out: dict[int, ImageEntry] = {}
    keys: set[str] = set()
    for im in doc["images"]:
        if not isinstance(im, dict):
            problems.append((rel, f"{rel}: image entry {im!r} is not an object"))
            continue
        name = relative_name(im.get("file_name"))
        w, h, iid = im.get("width"), im.get("height"), im.get("id")
        label = f"{rel}: image id {iid!r} ({im.get('file_name')!r})"
        if name is None or not isinstance(iid, int) or not (isinstance(w, int) and isinstance(h, int) and w > 0
                                                            and h > 0):
            problems.append((rel, f"{label}: needs an integer id, width and height and a relative file_name"))
            continue
        key = prefix + name.rsplit(".", 1)[0] if "." in name.rsplit("/", 1)[-1] else prefix + name
        if iid in out or key in keys:
            problems.append((key, f"{label}: the id or file name appears twice; the first is read"))
            continue
        path = find_image(ann, name)
        if path is None:
            problems.append((key, f"{label}: image file not found"))
            continue
        keys.add(key)
        out[iid] = ImageEntry(key, path, (w, h), iid)
    return out


# ---------------------------------------------------------------------------------------------
# categories


def is_background(name: str) -> bool:
    return re.sub(r"[\s_\-]+", "", name).casefold() == BACKGROUND


@dataclass
class ClassList:
    """Class names built from the categories of several files (see the module doc)."""

    names: list[str] = field(default_factory=lambda: [BACKGROUND])
    colors: list[tuple[int, int, int] | None] = field(default_factory=lambda: [None])
    notes: list[str] = field(default_factory=list)

    def add_file(self, categories: object, used: set[int], what: str) -> dict[int, int]:
        """Category id → class value for one file's `categories`; FormatError when malformed."""
        if not isinstance(categories, list):
            raise FormatError(f"{what}: no 'categories' list")
        cats: dict[int, dict] = {}
        for c in categories:
            if not (isinstance(c, dict) and isinstance(c.get("id"), int) and isinstance(c.get("name"), str)):
                raise FormatError(f"{what}: category {c!r} has no integer 'id' and string 'name'")
            if c["id"] in cats:
                raise FormatError(f"{what}: category id {c['id']} appears twice")
            cats[c["id"]] = c
        supers = {c.get("supercategory") for c in cats.values() if c.get("supercategory") != c["name"]}
        values: dict[int, int] = {}
        for cid in sorted(cats):
            name = cats[cid]["name"].strip() or f"category {cid}"
            if cid not in used and name in supers:
                self.notes.append(f"{what}: category {name!r} (id {cid}) left out: unused, the "
                                  "supercategory of others")
                continue
            values[cid] = self._value(name, cats[cid].get("color"))
        if len(self.names) > MAX_CLASSES:
            raise FormatError(f"{what}: {len(self.names)} classes, at most {MAX_CLASSES} fit a label map")
        return values

    def _value(self, name: str, color: object) -> int:
        if name == IGNORE_CATEGORY:
            return IGNORE
        if is_background(name):
            return 0
        if name not in self.names:
            self.names.append(name)
            ok = isinstance(color, list) and len(color) == 3 and all(isinstance(v, int) and 0 <= v < 256
                                                                       for v in color)
            self.colors.append(tuple(color) if ok else None)
        return self.names.index(name)

    def dataset_colors(self) -> list[tuple[int, int, int]] | None:
        """The categories' colours (panoptic files have them) when every class has one."""
        rest = self.colors[1:]
        if not rest or any(c is None for c in rest):
            return None
        return [self.colors[0] or (0, 0, 0), *rest]
