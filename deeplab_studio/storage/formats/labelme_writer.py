"""The labelme writer: one `<stem>.json` per image beside a copy of the image, and `labels.txt`.

Each region of one class becomes a polygon through its boundary pixels (`contours.trace_regions`:
every corner kept), in painting order: a region before the regions in its holes, so labelme's
painter's order (later shapes over earlier) gives the holes back; enclosed background regions are
`_background_` polygons, void is `__ignore__`. The shapes are painted again here the way the
reader (and labelme2voc) paints them; pixels that still differ, where regions cross diagonally,
get one-row polygons drawn last, so every written file reads back to its label map exactly.

`labels.txt` is labelme2voc's: `__ignore__`, `_background_` (class 0, whatever its name), then the
classes. `imagePath` is the image's name beside the JSON; `imageData` is written only with
`embed_images=True` (the copied image's bytes, upright: the copy has no EXIF rotation left).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.storage.formats.base import Cancel, ExportItem, FormatError, Progress
from deeplab_studio.storage.formats.contours import pixel_runs, trace_regions
from deeplab_studio.storage.formats.labelme_shapes import BACKGROUND_LABEL, IGNORE_LABEL, Shape, paint
from deeplab_studio.storage.formats.mask_files import checked_labels, place_image, write_bytes, write_items

FORMAT_VERSION = "5.5.0"  # the labelme JSON layout of labelme 5 and 6 (neither checks the version)


def _polygon(points: np.ndarray) -> tuple[tuple[float, float], ...]:
    """A polygon of at least 3 points (labelme's minimum): 1- and 2-point outlines are repeated."""
    pts = [(float(x), float(y)) for x, y in points]
    if len(pts) == 1:
        pts *= 3
    elif len(pts) == 2:
        pts.append(pts[0])
    return tuple(pts)


def trace_shapes(labels: np.ndarray) -> tuple[list[tuple[int, tuple[tuple[float, float], ...]]], int]:
    """((value, polygon) in painting order, number of patch polygons) that paint `labels` exactly.

    Raises FormatError if painting them does not give the map back (it always should).
    """
    shapes = [(r.value, _polygon(r.points)) for r in trace_regions(labels)]
    h, w = labels.shape
    canvas = Image.new("L", (w, h), 0)
    _paint(canvas, shapes)
    wrong = np.asarray(canvas) != labels
    patches = []
    if wrong.any():
        for value in np.unique(labels[wrong]).tolist():
            for y, x0, x1 in pixel_runs(wrong & (labels == value)):
                patches.append((int(value), ((float(x0), float(y)), (float(x1), float(y)), (float(x0), float(y)))))
        _paint(canvas, patches)
        if not np.array_equal(np.asarray(canvas), labels):
            raise FormatError("the traced polygons do not reproduce the label map")
    return shapes + patches, len(patches)


def _paint(canvas: Image.Image, shapes: list[tuple[int, tuple[tuple[float, float], ...]]]) -> None:
    paint(canvas, [Shape(i, "", "polygon", pts) for i, (_, pts) in enumerate(shapes)], [v for v, _ in shapes])


def shape_names(labels: LabelSet) -> list[str]:
    """The label each class value is written with (class 0: `_background_`); FormatError when a
    class is called like one of labelme's reserved labels."""
    names = [BACKGROUND_LABEL, *labels.names[1:]]
    for i, n in enumerate(names[1:], 1):
        if n in (BACKGROUND_LABEL, IGNORE_LABEL):
            raise FormatError(f"class {i} is called {n!r}, which labelme reserves; rename it first")
    return names


def _shape_dict(label: str, points: tuple[tuple[float, float], ...]) -> dict:
    return {"label": label, "points": [list(p) for p in points], "group_id": None, "description": "",
            "shape_type": "polygon", "flags": {}, "mask": None}


def labelme_json(shapes: list[dict], image_name: str, size: tuple[int, int], image_data: str | None) -> str:
    """The file's text: labelme's keys, one shape a line."""
    head = {"version": FORMAT_VERSION, "flags": {}}
    tail = {"imagePath": image_name, "imageData": image_data, "imageHeight": size[1], "imageWidth": size[0]}
    lines = [f' "{k}": {json.dumps(v, ensure_ascii=False)}' for k, v in head.items()]
    body = ",\n".join("  " + json.dumps(s, ensure_ascii=False) for s in shapes)
    lines.append(' "shapes": [' + (f"\n{body}\n ]" if shapes else "]"))
    lines += [f' "{k}": {json.dumps(v, ensure_ascii=False)}' for k, v in tail.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


class LabelmeWriter:
    name = "labelme"
    title = "labelme / X-AnyLabeling JSON"
    tolerance = 0.0  # exact: see the module doc
    keeps_void = True

    def __init__(self, *, embed_images: bool = False) -> None:
        self.embed_images = embed_images

    def _write_one(self, stage: Path, item: ExportItem, stem: str, names: list[str], n_classes: int,
                   written: list[Path]) -> None:
        labels = checked_labels(item, n_classes)
        shapes, _ = trace_shapes(labels)
        img = place_image(item.image, stage / stem, item.size, jpeg_only=False)
        written.append(img)
        data = base64.b64encode(img.read_bytes()).decode("ascii") if self.embed_images else None
        dicts = [_shape_dict(IGNORE_LABEL if v == IGNORE else names[v], pts) for v, pts in shapes]
        written.append(stage / f"{stem}.json")
        write_bytes(written[-1], labelme_json(dicts, img.name, item.size, data))

    def write(self, stage: Path, items: Iterable[ExportItem], labels: LabelSet, *,
              progress: Progress | None = None, cancel: Cancel = None) -> list[tuple[str, str]]:
        """`<stem>.json` + the image for each item, and `labels.txt`; (key, reason) of failures."""
        names = shape_names(labels)
        failed = write_items(items, stage, lambda item, stem, written: self._write_one(
            stage, item, stem, names, len(labels), written), progress=progress, cancel=cancel)
        write_bytes(stage / "labels.txt", "".join(f"{n}\n" for n in [IGNORE_LABEL, *names]))
        return failed


WRITER = LabelmeWriter()
