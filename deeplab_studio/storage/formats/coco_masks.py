"""COCO segmentations: checking them, decoding them to masks with pycocotools, encoding masks.

A segmentation is a list of polygons (`[x1, y1, x2, y2, ...]`, at least 3 points each), an
uncompressed RLE (`{"size": [h, w], "counts": [int, ...]}`, column-major runs starting with
zeros) or a compressed one (`"counts"` a string). Decoding is pycocotools' (`frPyObjects` for
polygons and uncompressed RLE, `decode`), exactly what `COCO.annToMask` does, so polygons are
rasterised as every COCO tool rasterises them.

The writer's form is uncompressed RLE: COCO's own instances files use it, and it is the one form
besides polygons that every consumer reads (torchvision's segmentation reference passes each
segmentation through `frPyObjects`, which refuses compressed strings).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


class SegmentationError(ValueError):
    """A segmentation that cannot be decoded; the message says why."""


def _check_polygons(seg: list) -> None:
    if not seg:
        raise SegmentationError("empty segmentation (no polygon and no RLE)")
    for k, poly in enumerate(seg):
        if not isinstance(poly, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in poly):
            raise SegmentationError(f"polygon {k} is not a list of finite numbers")
        if len(poly) % 2:
            raise SegmentationError(f"polygon {k} has an odd number of coordinates ({len(poly)})")
        if len(poly) < 6:
            raise SegmentationError(f"polygon {k} has {len(poly) // 2} points, a polygon needs at least 3")


def string_counts(s: str) -> list[int]:
    """The runs of a compressed RLE string (COCO's: each run in 5-bit groups, chars from '0', the
    sixth bit "more follows", runs after the second stored as the difference to the run two back)."""
    counts: list[int] = []
    pos = 0
    while pos < len(s):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(s):
                raise SegmentationError("compressed RLE string ends inside a run")
            c = ord(s[pos]) - 48
            if not 0 <= c < 64:
                raise SegmentationError(f"compressed RLE has a character out of range ({s[pos]!r})")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value -= 1 << shift  # the last group's high bit is the sign
        counts.append(value + counts[-2] if len(counts) > 2 else value)
    return counts


def _check_counts(counts: list[int], h: int, w: int) -> None:
    if any(c < 0 for c in counts):
        raise SegmentationError("RLE counts are not non-negative integers")
    if sum(counts) != h * w:
        raise SegmentationError(f"RLE counts cover {sum(counts)} pixels, the image has {h * w}")


def _check_rle(seg: dict, h: int, w: int) -> None:
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise SegmentationError("RLE without a valid 'size' [height, width]")
    if tuple(size) != (h, w):
        raise SegmentationError(f"RLE size is {size[1]}×{size[0]}, the image is {w}×{h}")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise SegmentationError("RLE counts are not non-negative integers")
        _check_counts(counts, h, w)
    elif isinstance(counts, str) and counts:
        _check_counts(string_counts(counts), h, w)
    else:
        raise SegmentationError("RLE 'counts' is neither a list of runs nor a compressed string")


def check_segmentation(seg: Any, h: int, w: int) -> None:
    """Raise SegmentationError unless `seg` is a decodable segmentation for an h×w image."""
    if isinstance(seg, list):
        _check_polygons(seg)
    elif isinstance(seg, dict):
        _check_rle(seg, h, w)
    else:
        raise SegmentationError("no segmentation (a box-only annotation?)" if seg is None
                                else f"segmentation is a {type(seg).__name__}, not polygons or an RLE")


def to_rle(seg: Any, h: int, w: int) -> dict:
    """The compressed RLE of a checked segmentation (as `COCO.annToRLE`)."""
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, h, w)
    return {"size": seg["size"], "counts": seg["counts"].encode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """The bool H×W mask of a compressed RLE; SegmentationError for a damaged string."""
    try:
        with warnings.catch_warnings():  # pycocotools 2.0.x under numpy 2: a DeprecationWarning per call
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(rle).astype(bool)
    except (ValueError, UnicodeEncodeError) as exc:
        raise SegmentationError(f"RLE cannot be decoded ({exc})") from None


def area(rle: dict) -> int:
    return int(mask_utils.area(rle))


def encode_uncompressed(mask: np.ndarray) -> dict:
    """`{"size": [h, w], "counts": [...]}`: runs in column-major order, zeros first."""
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


def box_and_area(mask: np.ndarray) -> tuple[list[float], int]:
    """COCO's `bbox` ([x, y, w, h]) and `area` of a mask, from pycocotools' encoding."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return [float(v) for v in mask_utils.toBbox(rle)], int(mask_utils.area(rle))
