"""The COCO writer: instances and panoptic files over one copy of the images (CVAT's and
Datumaro's layout)::

    images/default/<stem>.<ext>
    annotations/instances_default.json
    annotations/panoptic_default.json
    annotations/panoptic_default/<stem>.png

A semantic map has no instances, so each class of an image is one annotation (COCO-Stuff's
convention): in the instances file an uncompressed RLE (see `coco_masks`) with `iscrowd=0`,
category id = class value (background, 0, is the pixels no annotation covers), void as category
255 `__ignore__` with `iscrowd=1` (COCO's "do not count" region, left out by torchvision's
segmentation reference); in the panoptic file one segment per class, every category stuff
(`isthing=0`), category id = segment id = class value + 1 (background included), void unlabelled
(segment 0). Both files read back to the label maps exactly, void included: `COCO.annToMask` of
each annotation, or our reader. Images are written upright (EXIF rotation baked in), so tools that
ignore EXIF (torchvision's `CocoDetection`) and tools that apply it see the same frame.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from deeplab_studio import __version__
from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.storage.formats.base import Cancel, ExportItem, FormatError, Progress
from deeplab_studio.storage.formats.coco_layout import BACKGROUND, IGNORE_CATEGORY, is_background
from deeplab_studio.storage.formats.coco_masks import box_and_area, encode_uncompressed
from deeplab_studio.storage.formats.coco_panoptic import panoptic_png
from deeplab_studio.storage.formats.mask_files import checked_labels, place_image, write_bytes, write_items

IMAGES = "images/default"
INSTANCES = "annotations/instances_default.json"
PANOPTIC = "annotations/panoptic_default.json"
PANOPTIC_PNGS = "annotations/panoptic_default"


def category_names(labels: LabelSet) -> list[str]:
    """Class names as categories (class 0: `background`); FormatError for a reserved name."""
    names = [BACKGROUND, *labels.names[1:]]
    for i, n in enumerate(names[1:], 1):
        if n == IGNORE_CATEGORY or is_background(n):
            raise FormatError(f"class {i} is called {n!r}, which reads back as void or background; rename it first")
    return names


def _info() -> dict:
    return {"description": "exported by DeepLab Studio", "version": __version__}


class CocoWriter:
    name = "coco"
    title = "COCO (instances and panoptic)"
    tolerance = 0.0
    keeps_void = True

    def _write_one(self, stage: Path, item: ExportItem, stem: str, image_id: int, n_classes: int,
                   written: list[Path]) -> tuple[dict, list[dict], dict]:
        """(image entry, instance annotations, panoptic annotation) of one item, its files written."""
        labels = checked_labels(item, n_classes)
        img = place_image(item.image, stage / IMAGES / stem, item.size, jpeg_only=False)
        written.append(img)
        png = stage / PANOPTIC_PNGS / f"{stem}.png"
        written.append(png)
        write_bytes(png, panoptic_png(labels))
        w, h = item.size
        entry = {"id": image_id, "file_name": img.relative_to(stage / IMAGES).as_posix(), "width": w, "height": h}
        instances, segments = [], []
        for v in np.unique(labels).tolist():
            mask = labels == v
            bbox, area = box_and_area(mask)
            if v != IGNORE:
                segments.append({"id": v + 1, "category_id": v + 1, "iscrowd": 0, "bbox": bbox, "area": area})
            if v != 0:
                instances.append({"image_id": image_id, "category_id": v, "segmentation": encode_uncompressed(mask),
                                  "area": area, "bbox": bbox, "iscrowd": int(v == IGNORE)})
        return entry, instances, {"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments}

    def write(self, stage: Path, items: Iterable[ExportItem], labels: LabelSet, *,
              progress: Progress | None = None, cancel: Cancel = None) -> list[tuple[str, str]]:
        """The layout of the module doc; returns (key, reason) of the items that failed."""
        names = category_names(labels)
        images: list[dict] = []
        instances: list[dict] = []
        panoptic: list[dict] = []

        def write_one(item: ExportItem, stem: str, written: list[Path]) -> None:
            entry, inst, pan = self._write_one(stage, item, stem, len(images) + 1, len(labels), written)
            images.append(entry)
            instances.extend(inst)
            panoptic.append(pan)

        failed = write_items(items, stage / IMAGES, write_one, progress=progress, cancel=cancel)
        for i, a in enumerate(instances, 1):
            a["id"] = i
        used_void = any(a["category_id"] == IGNORE for a in instances)
        cats = [{"id": v, "name": n, "supercategory": "class"} for v, n in enumerate(names) if v > 0]
        if used_void:
            cats.append({"id": IGNORE, "name": IGNORE_CATEGORY, "supercategory": "void"})
        pan_cats = [{"id": v + 1, "name": n, "supercategory": "class", "isthing": 0, "color": list(c)}
                    for v, (n, c) in enumerate(zip(names, labels.colors))]
        for path, doc in ((INSTANCES, {"annotations": instances, "categories": cats}),
                          (PANOPTIC, {"annotations": panoptic, "categories": pan_cats})):
            body = {"info": _info(), "licenses": [], "images": images, **doc}
            write_bytes(stage / path, json.dumps(body, ensure_ascii=False, separators=(",", ":")))
        return failed


WRITER = CocoWriter()
