"""COCO datasets: instances (polygons and RLE) and panoptic, read as semantic label maps (the
layout, splits and category numbering are in `coco_layout`; the writer is in `coco_writer`).

Instances: every annotation of an image is drawn with its category's value, crowd regions
(`iscrowd=1`) too (they are pixels of that class). Where annotations overlap, the smaller one (by
decoded pixel count) is drawn over the larger, ties in file order: a cup on a table stays a cup,
whatever order the file lists them in. Pixels no annotation covers are background (0).
Panoptic: each pixel's segment (`id = R + 256·G + 256²·B` in the PNG) gives its category; id 0
(unlabelled) is void (255); things and stuff alike are classes.

Coordinates and masks are in the displayed frame (EXIF applied), unless the image entry's
`width`/`height` match only the stored frame (see `contours.drawing_frame`).

Bad input never stops the rest: an image whose annotations have an unknown category, a polygon
of fewer than 3 points, an RLE of another size than the image, or no segmentation at all is
named in `problems` with the annotation's id, and left out; so are images whose file is missing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deeplab_studio.storage.formats.base import FormatError, SourceDataset, SourceItem
from deeplab_studio.storage.formats.coco_layout import (
    AnnotationFile, ClassList, dataset_root, find_annotation_files, index_images, load_json, looks_like_coco)
from deeplab_studio.storage.formats.coco_masks import SegmentationError, area, check_segmentation, decode, to_rle
from deeplab_studio.storage.formats.coco_panoptic import index_panoptic
from deeplab_studio.storage.formats.coco_writer import WRITER  # noqa: F401  (the registry's)
from deeplab_studio.storage.formats.contours import drawing_frame
from deeplab_studio.storage.images import ImageReadError, probe_image


@dataclass
class CocoLabels:
    """The picklable label reader of one image of an instances file."""

    what: str  # names the annotation file and the image in messages
    image: Path
    size: tuple[int, int]  # the image entry's (width, height)
    annotations: list[tuple[int, Any]]  # (class value, segmentation) in file order

    def __call__(self) -> np.ndarray:
        try:
            frame = drawing_frame(probe_image(self.image), self.size, what=self.what)
        except ImageReadError as exc:
            raise FormatError(str(exc)) from None
        w, h = self.size
        try:
            rles = [(value, to_rle(seg, h, w)) for value, seg in self.annotations]
            order = sorted(range(len(rles)), key=lambda i: -area(rles[i][1]))  # stable: ties in file order
            labels = np.zeros((h, w), np.uint8)
            for i in order:
                labels[decode(rles[i][1])] = rles[i][0]
        except SegmentationError as exc:
            raise FormatError(f"{self.what}: {exc}") from None
        return frame.to_displayed(labels)


def _read_instances(ann: AnnotationFile, doc: dict, classes: ClassList, prefix: str, rel: str,
                    problems: list[tuple[str, str]]) -> list[SourceItem]:
    anns = [a for a in doc.get("annotations", []) if isinstance(a, dict)]
    used = {a.get("category_id") for a in anns}
    values = classes.add_file(doc.get("categories"), used, rel)
    images = index_images(doc, ann, prefix, rel, problems)
    listed = {im.get("id") for im in doc["images"] if isinstance(im, dict)}
    per_image: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    bad: dict[int, list[str]] = defaultdict(list)
    for a in anns:
        iid, aid, cid = a.get("image_id"), a.get("id"), a.get("category_id")
        if iid not in images:
            if iid not in listed:
                problems.append((rel, f"{rel}: annotation id {aid!r}: no image with id {iid!r}"))
            continue  # else its image is missing or bad, and named already
        entry = images[iid]
        try:
            if cid not in values:
                raise SegmentationError(f"unknown category_id {cid!r}")
            check_segmentation(a.get("segmentation"), entry.size[1], entry.size[0])
        except SegmentationError as exc:
            bad[iid].append(f"annotation id {aid!r}: {exc}")
            continue
        per_image[iid].append((values[cid], a["segmentation"]))
    items = []
    for iid, e in images.items():
        if bad[iid]:
            more = f"; and {len(bad[iid]) - 3} more" if len(bad[iid]) > 3 else ""
            problems.append((e.key, f"{rel}: image {e.key!r}: " + "; ".join(bad[iid][:3]) + more))
            continue
        items.append(SourceItem(e.key, e.image, CocoLabels(f"{rel}: image {e.key!r}", e.image, e.size,
                                                           per_image[iid]), ann.split))
    return items


class CocoReader:
    name = "coco"
    title = "COCO (instances or panoptic)"

    def detect(self, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            return looks_like_coco(path)
        try:
            find_annotation_files(path)
        except FormatError:
            return False
        return True

    def read(self, path: Path) -> SourceDataset:
        path = Path(path)
        files, notes = find_annotation_files(path)
        root = path if path.is_dir() else dataset_root(path)
        classes = ClassList()
        items: list[SourceItem] = []
        problems: list[tuple[str, str]] = []
        for ann in files:
            rel = ann.path.relative_to(root).as_posix() if ann.path.is_relative_to(root) else str(ann.path)
            prefix = f"{ann.split}/" if len(files) > 1 else ""
            try:
                doc = load_json(ann.path)
            except FormatError as exc:
                problems.append((rel, str(exc)))
                continue
            notes.append(f"{rel}: {ann.kind}, split {ann.split}")
            read = index_panoptic if ann.kind == "panoptic" else _read_instances
            items += read(ann, doc, classes, prefix, rel, problems)
        if not items and len(problems) == len(files):
            raise FormatError(f"{path}: no COCO annotation file could be read: {problems[0][1]}")
        notes += classes.notes
        return SourceDataset(self.name, root, classes.names, classes.dataset_colors(), items, problems, notes)


READER = CocoReader()
