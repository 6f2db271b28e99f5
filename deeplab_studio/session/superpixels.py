"""Superpixels for the wand: SLIC at a few scales, computed once per image in the background.

SLIC is scikit-image's (`skimage.segmentation.slic`, Lab colour, connected segments); OpenCV's
SLIC lives in `ximgproc`, which only the contrib build ships. A large image is segmented on a
copy shrunk to at most `WORK_PIXELS` pixels (INTER_AREA), and a segment's full-resolution mask
is made on demand: the label field is upsampled (nearest) inside the segment's box and the pixels
near a segment border are given to the neighbouring segment (3×3 at the working size) whose
mean colour, plus a small distance term, is nearest, so a border follows the image's edges at
full resolution instead of the working grid's stair-steps. Nothing image-sized is held beyond the
working-size label fields. Qt-free: `SuperpixelCache` uses a `concurrent.futures` thread, as the
image prefetcher does.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

BBox = tuple[int, int, int, int]

#: superpixels per image at each scale, fine to coarse (the wand starts at the first)
SCALES: tuple[int, ...] = (1200, 300, 75)
#: images larger than this many pixels are segmented on a shrunk copy
WORK_PIXELS = 600_000
COMPACTNESS = 20.0  # SLIC's colour/space balance in Lab: on tests/data/voc_real 20 holds the objects better than 5 or 10 (benchmarks/bench_wand.py)
_SPATIAL = 400.0  # border re-assignment: squared RGB distance per squared working pixel of offset


class SuperpixelsCancelled(Exception):
    """The computation was asked to stop (the image was closed)."""


@dataclass
class SuperpixelLevel:
    """One scale: the label field at the working size, each segment's box there and mean colour."""

    field: np.ndarray  # int32 h×w, segments 0..n-1
    boxes: np.ndarray  # int32 n×4: x0, y0, x1, y1 (exclusive) at the working size
    means: np.ndarray  # float32 n×3: mean RGB

    @property
    def count(self) -> int:
        return int(self.boxes.shape[0])


class Superpixels:
    """Segments of one image at each scale; `region_at(scale, x, y)` is the wand's query."""

    def __init__(self, image: np.ndarray, levels: Sequence[SuperpixelLevel], scales: Sequence[int]) -> None:
        self.image = image
        self.shape = image.shape[:2]
        self.levels = list(levels)
        self.scales = tuple(scales)
        h, w = self.levels[0].field.shape
        self.work_shape = (h, w)
        self.factor = self.shape[0] / h  # full pixels per working pixel (1.0: no shrinking)

    def __len__(self) -> int:
        return len(self.levels)

    def _work_index(self, i: np.ndarray | int, axis: int) -> np.ndarray | int:
        """Working-size row (axis 0) or column (1) that full-size row/column `i` falls in."""
        full, work = self.shape[axis], self.work_shape[axis]
        return np.minimum(((np.asarray(i) + 0.5) * work / full).astype(np.int64), work - 1)

    def segment_at(self, scale: int, x: float, y: float) -> int | None:
        """The segment id under image point (x, y) at `scale`, or None outside the image."""
        if not (0 <= x < self.shape[1] and 0 <= y < self.shape[0]):
            return None
        level = self.levels[scale]
        return int(level.field[self._work_index(int(y), 0), self._work_index(int(x), 1)])

    def mask(self, scale: int, segment: int) -> tuple[BBox, np.ndarray]:
        """(box, bool mask over the box) of `segment` at full resolution."""
        level = self.levels[scale]
        x0, y0, x1, y1 = (int(v) for v in level.boxes[segment])
        if self.factor == 1.0:
            return (x0, y0, x1, y1), level.field[y0:y1, x0:x1] == segment
        h, w = self.work_shape
        x0, y0, x1, y1 = max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, w), min(y1 + 1, h)
        fy0, fy1 = (max(0, math.ceil(v * self.shape[0] / h - 0.5)) for v in (y0, y1))
        fx0, fx1 = (max(0, math.ceil(v * self.shape[1] / w - 0.5)) for v in (x0, x1))
        fy1, fx1 = min(fy1, self.shape[0]), min(fx1, self.shape[1])
        labels = self._refined(level, (fx0, fy0, fx1, fy1))
        crop = labels == segment
        rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
        if rows.size == 0:  # every pixel went to a neighbour: keep the nearest-neighbour mask
            crop = self._nearest(level, (fx0, fy0, fx1, fy1)) == segment
            rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
        box = (fx0 + int(cols[0]), fy0 + int(rows[0]), fx0 + int(cols[-1]) + 1, fy0 + int(rows[-1]) + 1)
        return box, crop[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]

    def region_at(self, scale: int, x: float, y: float) -> tuple[BBox, np.ndarray] | None:
        """The full-resolution mask of the segment under (x, y), or None outside the image."""
        seg = self.segment_at(scale, x, y)
        if seg is None:
            return None
        box, crop = self.mask(scale, seg)
        bx, by = int(x) - box[0], int(y) - box[1]
        inside = 0 <= by < crop.shape[0] and 0 <= bx < crop.shape[1] and crop[by, bx]
        if not inside:  # the border re-assignment gave the clicked pixel away: the click still counts
            crop = crop.copy()
            x0, y0 = min(box[0], int(x)), min(box[1], int(y))
            grown = np.zeros((max(box[3], int(y) + 1) - y0, max(box[2], int(x) + 1) - x0), bool)
            grown[box[1] - y0:box[3] - y0, box[0] - x0:box[2] - x0] = crop
            grown[int(y) - y0, int(x) - x0] = True
            box, crop = (x0, y0, x0 + grown.shape[1], y0 + grown.shape[0]), grown
        return box, crop

    def _nearest(self, level: SuperpixelLevel, box: BBox) -> np.ndarray:
        x0, y0, x1, y1 = box
        ri, ci = self._work_index(np.arange(y0, y1), 0), self._work_index(np.arange(x0, x1), 1)
        return level.field[ri][:, ci]

    def _refined(self, level: SuperpixelLevel, box: BBox) -> np.ndarray:
        """Labels over a full-size box: nearest-neighbour upsampling, then each pixel next to a
        segment border (3×3 at the working size) takes, among the segments of that neighbourhood,
        the one whose mean colour (plus offset²·_SPATIAL) is nearest."""
        x0, y0, x1, y1 = box
        h, w = self.work_shape
        ri, ci = self._work_index(np.arange(y0, y1), 0), self._work_index(np.arange(x0, x1), 1)
        out = level.field[ri][:, ci]
        wy0, wy1, wx0, wx1 = int(ri[0]), int(ri[-1]) + 1, int(ci[0]), int(ci[-1]) + 1
        pad = np.pad(level.field[max(wy0 - 1, 0):wy1 + 1, max(wx0 - 1, 0):wx1 + 1],
                     ((int(wy0 == 0), int(wy1 == h)), (int(wx0 == 0), int(wx1 == w))), mode="edge")
        core = pad[1:-1, 1:-1]
        mixed = np.zeros(core.shape, bool)
        for dr in (0, 1, 2):
            for dc in (0, 1, 2):
                mixed |= pad[dr:dr + core.shape[0], dc:dc + core.shape[1]] != core
        yy, xx = np.nonzero(mixed[ri - wy0][:, ci - wx0])  # full pixels next to a border
        if yy.size == 0:
            return out
        fy = (yy + y0 + 0.5) * h / self.shape[0] - 0.5  # position in working pixels
        fx = (xx + x0 + 0.5) * w / self.shape[1] - 0.5
        rgb = self.image[yy + y0, xx + x0].astype(np.float32)
        best = np.full(yy.size, np.inf, np.float32)
        pick = out[yy, xx].copy()
        for dr in (-1, 0, 1):
            rr = np.clip(ri[yy] + dr, 0, h - 1)
            for dc in (-1, 0, 1):
                cc = np.clip(ci[xx] + dc, 0, w - 1)
                cand = level.field[rr, cc]
                d = ((rgb - level.means[cand]) ** 2).sum(axis=1) + _SPATIAL * ((fy - rr) ** 2 + (fx - cc) ** 2)
                better = d < best
                best[better] = d[better]
                pick[better] = cand[better]
        out[yy, xx] = pick
        return out


def _level(field: np.ndarray, work_image: np.ndarray) -> SuperpixelLevel:
    """Boxes and mean colours of the segments of `field` (ids 0..n-1)."""
    n = int(field.max()) + 1
    flat = field.ravel()
    h, w = field.shape
    rows = np.repeat(np.arange(h, dtype=np.int32), w)
    cols = np.tile(np.arange(w, dtype=np.int32), h)
    boxes = np.empty((n, 4), np.int32)
    boxes[:, 0], boxes[:, 1] = w, h
    boxes[:, 2:] = 0
    np.minimum.at(boxes[:, 0], flat, cols)
    np.minimum.at(boxes[:, 1], flat, rows)
    np.maximum.at(boxes[:, 2], flat, cols + 1)
    np.maximum.at(boxes[:, 3], flat, rows + 1)
    sizes = np.maximum(np.bincount(flat, minlength=n), 1).astype(np.float64)
    means = np.stack([np.bincount(flat, work_image[..., c].ravel(), minlength=n) / sizes for c in range(3)], axis=1)
    return SuperpixelLevel(field, boxes, means.astype(np.float32))


def compute_superpixels(image: np.ndarray, scales: Sequence[int] = SCALES, *, work_pixels: int = WORK_PIXELS,
                        compactness: float = COMPACTNESS,
                        cancel: Callable[[], bool] | None = None) -> Superpixels:
    """SLIC segments of an RGB uint8 image at each scale (superpixels per image, fine first).

    Raises `SuperpixelsCancelled` when `cancel()` turns True (checked between scales)."""
    from skimage.segmentation import slic  # imported here: ~0.3 s, only once the first image opens

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 H×W×3, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    shrink = min(1.0, math.sqrt(work_pixels / float(h * w)))
    work = image
    if shrink < 1.0:
        size = (max(1, round(w * shrink)), max(1, round(h * shrink)))
        work = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    levels = []
    for n in scales:
        if cancel is not None and cancel():
            raise SuperpixelsCancelled("superpixels cancelled")
        field = slic(work, n_segments=int(n), compactness=compactness, start_label=0, channel_axis=-1)
        levels.append(_level(field.astype(np.int32, copy=False), work))
    return Superpixels(image, levels, scales)


class SuperpixelCache:
    """Superpixels of the last `capacity` images, computed on one background thread.

    `start(key, image)` begins (or keeps) the computation; `get(key)` waits for it and returns
    the result, or None when it was never started, was cancelled or failed."""

    def __init__(self, compute: Callable[..., Superpixels] = compute_superpixels, *, capacity: int = 2) -> None:
        self._compute = compute
        self.capacity = capacity
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="superpixels")
        self._jobs: OrderedDict[str, tuple[Future, list[bool]]] = OrderedDict()

    def start(self, key: str, image: np.ndarray) -> Future:
        job = self._jobs.get(key)
        if job is not None and job[0].done() and job[0].exception() is not None:
            job = None  # a failed computation is tried again
        if job is None:
            stop = [False]
            fut = self._pool.submit(self._compute, image, cancel=lambda: stop[0])
            job = (fut, stop)
        self._jobs[key] = job
        self._jobs.move_to_end(key)
        while len(self._jobs) > self.capacity:
            _, (old, old_stop) = self._jobs.popitem(last=False)
            old_stop[0] = True
            old.cancel()
        return job[0]

    def ready(self, key: str) -> bool:
        job = self._jobs.get(key)
        return job is not None and job[0].done()

    def get(self, key: str, timeout: float | None = None) -> Superpixels | None:
        job = self._jobs.get(key)
        if job is None:
            return None
        try:
            return job[0].result(timeout)
        except (CancelledError, TimeoutError, SuperpixelsCancelled, ValueError, MemoryError):
            return None

    def shutdown(self) -> None:
        for fut, stop in self._jobs.values():
            stop[0] = True
            fut.cancel()
        self._jobs.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
