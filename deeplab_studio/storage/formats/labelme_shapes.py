"""labelme / X-AnyLabeling shapes: checking one shape dict, and painting shapes into a label map.

Shapes are drawn as labelme's `labelme2voc.py` draws them (`labelme.utils.shapes_to_label`), with
the same Pillow drawing calls, so a labelme folder imports to the maps labelme itself makes:

- coordinates are Pillow's: integer (x, y) is the centre of pixel (x, y);
- polygon (also labelme's `oriented_rectangle` and X-AnyLabeling's `rotation`, 4 points): the
  pixels whose centres are inside or on it;
- rectangle: two corners (X-AnyLabeling writes four: their bounding box is taken);
- circle: centre and a point on the circle;
- line and linestrip: 10 px wide (labelme2voc's width), no caps or joints;
- point: a disk of radius 5 (labelme2voc's point size);
- mask: a base64 PNG of the box from the first point to the second (inclusive, truncated to
  integers), non-zero pixels set.

Later shapes paint over earlier ones (labelme's order); group ids are ignored.

Measured: on the three files of labelme's own semantic-segmentation example (drawn in labelme),
0 pixels differ from labelme 6.3.1's `shapes_to_label` (Pillow 13), and 1 of 544,000 from the
PNGs its repository ships (made by labelme2voc with an older Pillow).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IGNORE_LABEL = "__ignore__"  # void (255)
BACKGROUND_LABEL = "_background_"  # 0
LINE_WIDTH = 10  # labelme2voc draws lines and linestrips this wide
POINT_RADIUS = 5  # ... and points as disks of this radius

_POLYGONS = ("polygon", "oriented_rectangle", "rotation")
KNOWN_TYPES = (*_POLYGONS, "rectangle", "circle", "line", "linestrip", "point", "mask")
_MAX_MASK_PIXELS = 400_000_000


class ShapeError(ValueError):
    """A shape that cannot be drawn; the message says what is wrong with it."""


@dataclass(frozen=True)
class Shape:
    """One checked labelme shape."""

    index: int  # its position in the file's `shapes`
    label: str
    kind: str  # one of KNOWN_TYPES
    points: tuple[tuple[float, float], ...]
    mask_b64: str | None = None  # the `mask` shape's PNG

    def describe(self) -> str:
        """How messages name the shape: "shape 3 ('dog', polygon)"."""
        return f"shape {self.index} ({self.label!r}, {self.kind})"


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_points(raw: object) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, list) or not raw:
        raise ShapeError("'points' must be a non-empty list of [x, y]")
    pts = []
    for p in raw:
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and _number(p[0]) and _number(p[1])):
            raise ShapeError(f"point {p!r} is not [x, y] with finite numbers")
        pts.append((float(p[0]), float(p[1])))
    return tuple(pts)


def _need(kind: str, n: int, allowed: tuple[int, ...] | None = None, least: int = 1) -> None:
    if allowed is not None and n not in allowed:
        raise ShapeError(f"a {kind} has {' or '.join(map(str, allowed))} points, this one has {n}")
    if n < least:
        raise ShapeError(f"a {kind} needs at least {least} points, this one has {n}")


def parse_shape(obj: object, index: int) -> Shape:
    """A checked `Shape` from one entry of a file's `shapes`; ShapeError names what is wrong."""
    if not isinstance(obj, dict):
        raise ShapeError(f"shape {index}: not a JSON object")
    label = obj.get("label")
    kind = obj.get("shape_type") or "polygon"  # labelme < 3 wrote no shape_type: polygons
    name = f"shape {index} ({label!r}, {kind})"
    try:
        if not isinstance(label, str) or not label.strip():
            raise ShapeError("'label' must be a non-empty string")
        if kind not in KNOWN_TYPES:
            raise ShapeError(f"unknown shape_type (known: {', '.join(KNOWN_TYPES)})")
        pts = _check_points(obj.get("points"))
        n = len(pts)
        if kind in _POLYGONS:
            _need(kind, n, (4,) if kind != "polygon" else None, least=3)
        elif kind == "rectangle":
            _need(kind, n, (2, 4))
        elif kind in ("circle", "line", "mask"):
            _need(kind, n, (2,))
        elif kind == "linestrip":
            _need(kind, n, least=2)
        elif kind == "point":
            _need(kind, n, (1,))
        mask = obj.get("mask")
        if kind == "mask" and not isinstance(mask, str):
            raise ShapeError("'mask' must be a base64 PNG")
    except ShapeError as exc:
        raise ShapeError(f"{name}: {exc}") from None
    return Shape(index, label, kind, pts, mask if kind == "mask" else None)


def decode_mask(shape: Shape) -> np.ndarray:
    """The bool H×W of a `mask` shape's PNG; ShapeError when it is not an image."""
    try:
        data = base64.b64decode(shape.mask_b64 or "", validate=False)
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > _MAX_MASK_PIXELS:
                raise ShapeError(f"{shape.describe()}: mask of {im.width}×{im.height} pixels is too large")
            arr = np.asarray(im)
    except ShapeError:
        raise
    except (binascii.Error, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ShapeError(f"{shape.describe()}: 'mask' is not a base64 PNG ({exc})") from None
    return arr.any(axis=2) if arr.ndim == 3 else arr.astype(bool)


def _paint_mask(canvas: Image.Image, shape: Shape, value: int) -> None:
    (x1, y1), (x2, y2) = ((int(x), int(y)) for x, y in shape.points)  # int(): labelme's astype(int)
    mask = decode_mask(shape)
    want = (y2 - y1 + 1, x2 - x1 + 1)
    if mask.shape != want:
        raise ShapeError(f"{shape.describe()}: mask is {mask.shape[1]}×{mask.shape[0]} pixels, "
                         f"its box from ({x1}, {y1}) to ({x2}, {y2}) is {want[1]}×{want[0]}")
    if mask.any():
        canvas.paste(value, (x1, y1), Image.fromarray(mask.astype(np.uint8) * 255, "L"))


def paint(canvas: Image.Image, shapes: list[Shape], values: list[int]) -> None:
    """Paint `shapes` in order onto the mode-L `canvas`, shape i with `values[i]`.

    Raises ShapeError for a `mask` shape whose PNG is unreadable or does not fit its box.
    """
    draw = ImageDraw.Draw(canvas)
    for shape, v in zip(shapes, values):
        pts = list(shape.points)
        kind = shape.kind
        if kind in _POLYGONS:
            draw.polygon(pts, fill=v, outline=v)
        elif kind == "rectangle":
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            draw.rectangle(((min(xs), min(ys)), (max(xs), max(ys))), fill=v, outline=v)
        elif kind in ("circle", "point"):
            (cx, cy) = pts[0]
            r = math.dist(pts[0], pts[1]) if kind == "circle" else POINT_RADIUS
            draw.ellipse(((cx - r, cy - r), (cx + r, cy + r)), fill=v, outline=v)
        elif kind in ("line", "linestrip"):
            draw.line(pts, fill=v, width=LINE_WIDTH)
        else:
            _paint_mask(canvas, shape, v)
