"""Plain mask folders: `images/` and `masks/` side by side, a mask per image.

```
ROOT/images/<key>.<ext>     any image the app reads (JPEG, PNG, BMP, TIFF, WebP); subfolders allowed
ROOT/masks/<key>.png        index PNG (palette or 8-bit grayscale): pixel = class index, 255 = void
ROOT/classes.txt            optional: one class name per line, line i names class i
ROOT/dataset_meta.json      optional: Datumaro's class list with colours (`common_semantic_segmentation`)
```

Images and masks are paired by key (the path without its extension), so `images/a.tif` goes with
`masks/a.png`. An image without a mask, a mask without an image, and image files the app cannot
decode (HEIC, HEIF, AVIF) are named in `problems`. Classes: dataset_meta.json (with colours; its
`ignored` entry is void), else classes.txt, else numbered ("background", "class 1", ...) up to
the highest value the masks hold, found by reading them once. Colour masks are read in the
dataset_meta.json colours, else the Pascal VOC colours. The writer writes both class files (the
void colour declared as `ignored`, so Datumaro's `common_semantic_segmentation` reads the masks). Masks are in the image file's raw pixel
frame and rotated with an EXIF-rotated image (`mask_files`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from deeplab_studio.core.labels import IGNORE, IGNORE_COLOR, VOC_CLASSES, LabelSet, voc_colormap
from deeplab_studio.storage.formats.base import (
    ExportItem, FormatError, Progress, SourceDataset, SourceItem)
from deeplab_studio.storage.formats.mask_files import (
    MaskLabels, index_images, index_png, is_safe_key, write_bytes, write_pairs)
from deeplab_studio.storage.formats.voc import numbering
from deeplab_studio.storage.labelmaps import label_png_palette
from deeplab_studio.storage.voc_format import META_FILE, VOID_ENTRY, _read_lines, parse_meta_entries, shown

IMAGES, MASKS, CLASSES_FILE = "images", "masks", "classes.txt"


def meta_text(labels: LabelSet) -> str:
    """dataset_meta.json as Datumaro writes it, with the void colour declared last as `ignored`."""
    import json

    names = [*labels.names, VOID_ENTRY]
    colors = [list(c) for c in labels.colors] + [list(IGNORE_COLOR)]
    return json.dumps({"labels": names, "label_map": {str(i): n for i, n in enumerate(names)},
                       "segmentation_colors": colors, "background_label": "0"}, indent=1) + "\n"


def _masks(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    base = os.fspath(folder)
    for root, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        prefix = "" if root == base else root[len(base) + 1:].replace(os.sep, "/") + "/"
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(".png"):
                found[prefix + name[:-4]] = Path(root) / name
    return found


def _classes_from_values(items: list[SourceItem], masks: dict[str, Path]
                         ) -> tuple[list[str], list[tuple[int, int, int]] | None, list[tuple[str, str]]]:
    """(names, colours, problems) for masks that name no classes, each mask read once: the 21
    Pascal VOC classes and colours when every mask is a palette PNG drawing each of its values in
    its VOC colour (VOC-style folders, labelme2voc output), else "background", "class 1", ... up to
    the highest value. Masks that fail are problems (their items are dropped by the caller)."""
    top, bad, voc = 0, [], True
    cmap = voc_colormap(256)
    for item in items:
        try:
            labels = item.read_labels()
            palette = label_png_palette(masks[item.key]) if voc else None
        except Exception as exc:  # noqa: BLE001 - this mask's failure
            bad.append((item.key, str(exc) or type(exc).__name__))
            continue
        used = np.flatnonzero(np.bincount(labels.ravel(), minlength=256)[:IGNORE])
        top = max(top, int(used[-1]) if used.size else 0)
        voc = voc and palette is not None and len(palette) > top and bool((palette[used] == cmap[used]).all())
    if voc and items and top < len(VOC_CLASSES):
        return list(VOC_CLASSES), [tuple(int(v) for v in c) for c in cmap[:len(VOC_CLASSES)]], bad
    return ["background", *(f"class {i}" for i in range(1, top + 1))], None, bad


class MasksReader:
    name = "masks"
    title = "images/ + masks/ folders"

    def detect(self, path: Path) -> bool:
        return (Path(path) / IMAGES).is_dir() and (Path(path) / MASKS).is_dir()

    def read(self, path: Path, split: str | None = None) -> SourceDataset:
        root = Path(path).expanduser()
        if split is not None:
            raise FormatError(f"{root}: a mask folder has no splits (--split is for voc and cvat-mask)")
        if not self.detect(root):
            raise FormatError(f"{root}: no such folder" if not root.exists() else
                              f"{root}: not a mask folder (no {IMAGES}/ and {MASKS}/ here)")
        root = root.resolve()
        images, skipped = index_images(root / IMAGES)
        masks = _masks(root / MASKS)
        names, colors, palette, lut = None, None, None, None
        if (root / META_FILE).is_file():
            names, colors, palette, lut = numbering(parse_meta_entries(root / META_FILE))
        problems = [(f"{IMAGES}/{f}", why) for f, why in skipped]
        items = []
        for key, image in sorted(images.items()):
            if not is_safe_key(key):
                problems.append((shown(key), f"{shown(image)}: unsafe name (hidden or outside the folder): skipped"))
            elif key not in masks:
                problems.append((shown(key), f"{shown(root / MASKS / key)}.png: no mask for {shown(image)}"))
            else:
                items.append(SourceItem(key, image, MaskLabels(masks[key], image, palette, lut)))
        for key in sorted(set(masks) - set(images)):
            problems.append((shown(key), f"{shown(masks[key])}: no image for this mask in {IMAGES}/"))
        notes = [f"{len(items)} image/mask pairs"]
        declared = True
        if names is not None:
            notes.append(f"classes: {META_FILE}")
        elif (root / CLASSES_FILE).is_file():
            names = [line for _, line in _read_lines(root / CLASSES_FILE)]
            if not names:
                raise FormatError(f"{root / CLASSES_FILE}: lists no classes")
            notes.append(f"classes: {CLASSES_FILE}")
        else:
            names, colors, bad = _classes_from_values(items, masks)
            failed = {k for k, _ in bad}
            items = [it for it in items if it.key not in failed]
            problems += bad
            notes.append(f"no {CLASSES_FILE}: the masks are drawn in the Pascal VOC colours, so the 21 VOC classes"
                         if colors else f"no {CLASSES_FILE}: {len(names)} classes numbered from the masks' values")
            declared = False
        return SourceDataset(self.name, root, names, colors or None, items, problems, notes, declared)


class MasksWriter:
    name = "masks"
    title = "images/ + masks/ folders"

    def write(self, stage: Path, items: Iterable[ExportItem], labels: LabelSet, *,
              progress: Progress | None = None) -> list[tuple[str, str]]:
        """images/ (each image in its own format when upright), masks/ (palette PNGs in the
        classes' colours), classes.txt and dataset_meta.json."""
        _, failed = write_pairs(stage, items, labels, image_dir=IMAGES, mask_dir=MASKS,
                                encode=index_png, jpeg_only=False, progress=progress)
        write_bytes(stage / CLASSES_FILE, "".join(f"{n}\n" for n in labels.names))
        write_bytes(stage / META_FILE, meta_text(labels))
        return failed


READER = MasksReader()
WRITER = MasksWriter()
