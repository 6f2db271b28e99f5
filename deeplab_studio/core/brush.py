"""Brush rasterising on uint8 label maps: disk stamps and gap-free capsules between mouse points.

Pixel convention: pixel `[i, j]` covers the square `x in [j, j+1), y in [i, i+1)`; a point (x, y)
falls in pixel `[floor(y), floor(x)]`. A brush of radius r centred on pixel (cx, cy) covers the
pixels with `(x-cx)² + (y-cy)² <= r²`; a stroke segment covers every pixel whose (integer)
position lies within r of the segment between the two snapped end pixels: the exact union of all
disks along it, so even a very fast mouse move leaves no gap.

Radii are whole pixels, 0..`MAX_RADIUS` (a float radius is truncated). Modes are values:
paint = a class index, erase = 0 (`BACKGROUND`), ignore = 255 (`IGNORE`). All work happens inside
the stamp's box; nothing allocates image-sized temporaries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from typing import Protocol

import numpy as np

from .patches import BBox

Point = tuple[float, float]

# A long segment is rasterised in pieces no longer than this many radii, so each piece's box stays
# close to the capsule (a diagonal drag across the image never builds an image-sized box).
_PIECE_RADII = 3.0
_MIN_PIECE = 24.0
_CACHED_MOVE = 24  # moves up to this many pixels per axis reuse a cached capsule mask ...
_CACHED_RADIUS = 64  # ... for brushes up to this radius (bounds the cache's memory)
MAX_RADIUS = 1000


class ChangeListener(Protocol):
    def before_change(self, bbox: BBox) -> None: ...


@lru_cache(maxsize=32)
def _disk_cached(radius: int) -> np.ndarray:
    r = radius
    d = np.arange(-r, r + 1, dtype=np.int64)
    m = d[:, None] ** 2 + d[None, :] ** 2 <= r * r
    m.setflags(write=False)
    return m


def disk(radius: int) -> np.ndarray:
    """Read-only boolean (2r+1)×(2r+1) disk: True where dx² + dy² <= r². Cached per radius."""
    r = int(radius)
    if not 0 <= r <= MAX_RADIUS:
        raise ValueError(f"brush radius must be 0..{MAX_RADIUS}, got {radius}")
    return _disk_cached(r)


def _pixel(p: Point) -> tuple[int, int]:
    x, y = float(p[0]), float(p[1])
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"brush point must be finite, got {p}")
    return math.floor(x), math.floor(y)


def _write(labels: np.ndarray, box: BBox, mask: np.ndarray, value: int,
           protect: np.ndarray | None, edit_mask: np.ndarray | None,
           recorders: Iterable[ChangeListener]) -> BBox | None:
    """Write `value` where `mask` (box-sized) is True and not protected. Returns box or None."""
    x0, y0, x1, y1 = box
    if protect is not None:
        mask = mask & ~protect[y0:y1, x0:x1]
    if not mask.any():
        return None
    for rec in recorders:
        rec.before_change(box)
    labels[y0:y1, x0:x1][mask] = value
    if edit_mask is not None:
        edit_mask[y0:y1, x0:x1][mask] = True
    return box


def _check(labels: np.ndarray, value: int, radius: float,
           protect: np.ndarray | None, edit_mask: np.ndarray | None) -> int:
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D array, got shape {labels.shape}")
    if not 0 <= int(value) <= 255:
        raise ValueError(f"brush value must be 0..255, got {value}")
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"brush radius must be 0..{MAX_RADIUS}, got {radius}")
    for name, arr in (("protect", protect), ("edit_mask", edit_mask)):
        if arr is not None and arr.shape != labels.shape:
            raise ValueError(f"{name} shape {arr.shape} differs from labels {labels.shape}")
        if arr is not None and arr.dtype != bool:
            raise ValueError(f"{name} must be a bool array, got {arr.dtype}")
    return int(value)


def paint_disk(labels: np.ndarray, center_xy: Point, radius: int, value: int, *,
               protect: np.ndarray | None = None, edit_mask: np.ndarray | None = None,
               recorders: Iterable[ChangeListener] = ()) -> BBox | None:
    """Stamp a disk of `radius` at the pixel under `center_xy`.

    `protect` True = leave that pixel alone; written pixels become True in `edit_mask`; each
    recorder's `before_change(box)` runs before any write. Returns the written box (clipped), or
    None when the disk lies outside the image or every pixel under it is protected.
    """
    value = _check(labels, value, radius, protect, edit_mask)
    r = int(radius)
    cx, cy = _pixel(center_xy)
    return _stamp(labels, cx - r, cy - r, disk(r), value, protect, edit_mask, recorders)


def _stamp(labels: np.ndarray, ox: int, oy: int, shape_mask: np.ndarray, value: int,
           protect: np.ndarray | None, edit_mask: np.ndarray | None,
           recorders: Iterable[ChangeListener]) -> BBox | None:
    """Write a ready-made mask whose top-left pixel sits at (ox, oy), clipped to the image."""
    h, w = labels.shape
    mh, mw = shape_mask.shape
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + mw, w), min(oy + mh, h)
    if x1 <= x0 or y1 <= y0:
        return None
    mask = shape_mask[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    return _write(labels, (x0, y0, x1, y1), mask, value, protect, edit_mask, recorders)


@lru_cache(maxsize=1024)
def _capsule_cached(dx: int, dy: int, r: int) -> np.ndarray:
    """Read-only capsule from (0, 0) to (dx, dy); its top-left is (min(0,dx)-r, min(0,dy)-r)."""
    box = (min(0, dx) - r, min(0, dy) - r, max(0, dx) + r + 1, max(0, dy) + r + 1)
    m = capsule_mask(box, (0.0, 0.0), (float(dx), float(dy)), r)
    m.setflags(write=False)
    return m


def capsule_mask(box: BBox, a: Point, b: Point, radius: float) -> np.ndarray:
    """Boolean mask over `box` of the integer pixel positions within `radius` of segment a–b."""
    x0, y0, x1, y1 = box
    ax, ay = float(a[0]), float(a[1])
    dx, dy = float(b[0]) - ax, float(b[1]) - ay
    # offsets from the piece start are small: subtract in float64, then work in float32
    px = (np.arange(x0, x1, dtype=np.float64) - ax).astype(np.float32)
    py = (np.arange(y0, y1, dtype=np.float64) - ay).astype(np.float32)
    r2 = np.float32(radius * radius * (1.0 + 1e-6) + 1e-4)  # ties at exactly r count as inside
    ll = dx * dx + dy * dy
    if ll == 0.0:
        return py[:, None] ** 2 + px[None, :] ** 2 <= r2
    # projection parameter t of each pixel on the segment, clamped to the segment's ends
    t = (py[:, None] * np.float32(dy / ll) + px[None, :] * np.float32(dx / ll))
    np.clip(t, 0.0, 1.0, out=t)
    ex = px[None, :] - t * np.float32(dx)
    ey = py[:, None] - t * np.float32(dy)
    ex *= ex
    ey *= ey
    ex += ey
    return ex <= r2


def paint_line(labels: np.ndarray, p0_xy: Point, p1_xy: Point, radius: int, value: int, *,
               protect: np.ndarray | None = None, edit_mask: np.ndarray | None = None,
               recorders: Iterable[ChangeListener] = ()) -> BBox | None:
    """Paint the capsule of `radius` between the pixels under two successive mouse points.

    Gap-free for any distance between the points; clipped at the borders. Same `protect`,
    `edit_mask`, `recorders` rules as `paint_disk`. Returns the union of written boxes or None.
    """
    value = _check(labels, value, radius, protect, edit_mask)
    recorders = tuple(recorders)
    r = int(radius)
    ax, ay = _pixel(p0_xy)
    bx, by = _pixel(p1_xy)
    if ax == bx and ay == by:
        return paint_disk(labels, (ax, ay), r, value, protect=protect, edit_mask=edit_mask,
                          recorders=recorders)
    dx, dy = bx - ax, by - ay
    if abs(dx) <= _CACHED_MOVE and abs(dy) <= _CACHED_MOVE and r <= _CACHED_RADIUS:
        # the usual case: a short move; its capsule depends only on (dx, dy, r), so reuse it
        return _stamp(labels, min(ax, bx) - r, min(ay, by) - r, _capsule_cached(dx, dy, r),
                      value, protect, edit_mask, recorders)
    h, w = labels.shape
    length = math.hypot(dx, dy)
    n = max(1, math.ceil(length / max(_PIECE_RADII * r, _MIN_PIECE)))
    out: BBox | None = None
    for k in range(n):
        # piece k of the segment; the union of the pieces' capsules is the whole capsule
        sx, sy = ax + (bx - ax) * k / n, ay + (by - ay) * k / n
        ex, ey = ax + (bx - ax) * (k + 1) / n, ay + (by - ay) * (k + 1) / n
        x0 = max(math.ceil(min(sx, ex) - r), 0)
        y0 = max(math.ceil(min(sy, ey) - r), 0)
        x1 = min(math.floor(max(sx, ex) + r) + 1, w)
        y1 = min(math.floor(max(sy, ey) + r) + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        box = (x0, y0, x1, y1)
        mask = capsule_mask(box, (sx, sy), (ex, ey), r)
        done = _write(labels, box, mask, value, protect, edit_mask, recorders)
        if done is not None:
            out = done if out is None else (min(out[0], x0), min(out[1], y0),
                                            max(out[2], x1), max(out[3], y1))
    return out
