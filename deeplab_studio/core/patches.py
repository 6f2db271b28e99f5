"""Undo data for raster edits: `MaskPatch`, the per-stroke `StrokeRecorder`, whole-mask diffs.

A patch stores the pixels of one box before and after a change, so memory follows the edited
area, never the image. Boxes are `(x0, y0, x1, y1)`, half-open: `arr[y0:y1, x0:x1]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BBox = tuple[int, int, int, int]

TILE = 64  # side of the tiles in which a StrokeRecorder saves original pixels


def _slices(bbox: BBox) -> tuple[slice, slice]:
    x0, y0, x1, y1 = bbox
    return slice(y0, y1), slice(x0, x1)


def union_bbox(*boxes: BBox | None) -> BBox | None:
    """The smallest box holding every given box (None entries and empty boxes are skipped)."""
    live = [b for b in boxes if b is not None and b[2] > b[0] and b[3] > b[1]]
    if not live:
        return None
    return (min(b[0] for b in live), min(b[1] for b in live),
            max(b[2] for b in live), max(b[3] for b in live))


def clip_bbox(bbox: BBox, shape_hw: tuple[int, ...]) -> BBox | None:
    """`bbox` clipped to an image of `shape_hw` (H, W, ...); None when nothing is left."""
    h, w = shape_hw[0], shape_hw[1]
    x0, y0, x1, y1 = max(bbox[0], 0), max(bbox[1], 0), min(bbox[2], w), min(bbox[3], h)
    if x1 <= x0 or y1 <= y0:
        return None
    return (int(x0), int(y0), int(x1), int(y1))


def bbox_of(mask: np.ndarray) -> BBox | None:
    """The tight box of the True pixels of a 2-D mask, or None when it has none."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"bbox_of needs a 2-D mask, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


@dataclass(eq=False)
class MaskPatch:
    """The pixels of one box of an array before and after a change.

    `apply(arr)` writes `after` into the box, `revert(arr)` writes `before` back; both are exact.
    Works for any array whose first two axes are rows and columns (label maps, edit masks).
    """

    bbox: BBox
    before: np.ndarray
    after: np.ndarray

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = (int(v) for v in self.bbox)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"empty patch box {self.bbox}")
        self.bbox = (x0, y0, x1, y1)
        if self.before.shape != self.after.shape or self.before.shape[:2] != (y1 - y0, x1 - x0):
            raise ValueError(
                f"patch arrays {self.before.shape} / {self.after.shape} do not fit box {self.bbox}")
        if self.before.dtype != self.after.dtype:
            raise ValueError(f"patch dtypes differ: {self.before.dtype} vs {self.after.dtype}")

    def apply(self, arr: np.ndarray) -> None:
        """Write the changed pixels into `arr` (redo)."""
        self._check(arr)
        arr[_slices(self.bbox)] = self.after

    def revert(self, arr: np.ndarray) -> None:
        """Write the original pixels back into `arr` (undo)."""
        self._check(arr)
        arr[_slices(self.bbox)] = self.before

    @property
    def nbytes(self) -> int:
        return int(self.before.nbytes + self.after.nbytes)

    def changed(self) -> np.ndarray:
        """Boolean mask (box-sized) of the pixels this patch changes."""
        diff = self.before != self.after
        return diff if diff.ndim == 2 else diff.reshape(diff.shape[0], diff.shape[1], -1).any(axis=2)

    def compact(self) -> "MaskPatch | SparsePatch":
        """This patch or a `SparsePatch` of the changed pixels only, whichever is smaller."""
        sparse = SparsePatch.from_dense(self)
        return sparse if sparse.nbytes < self.nbytes else self

    def _check(self, arr: np.ndarray) -> None:
        _check_fits(self.bbox, self.before.shape[2:], arr)


def _check_fits(bbox: BBox, tail: tuple[int, ...], arr: np.ndarray) -> None:
    x0, y0, x1, y1 = bbox
    if arr.shape[0] < y1 or arr.shape[1] < x1 or arr.shape[2:] != tail:
        raise ValueError(f"patch box {bbox} does not fit an array of shape {arr.shape}")


class SparsePatch:
    """A patch that keeps only the changed pixels of its box: a bit mask plus their values.

    Same interface as `MaskPatch` (`bbox`, `apply`, `revert`, `nbytes`, `changed`); memory is
    box/8 + 2 × changed pixels (× channels and item size) instead of 2 × box.
    """

    def __init__(self, bbox: BBox, bits: np.ndarray, before: np.ndarray, after: np.ndarray) -> None:
        self.bbox = bbox
        self._bits = bits  # np.packbits of the box-sized changed mask
        self.before = before  # values at the changed pixels, in row-major order
        self.after = after

    @classmethod
    def from_dense(cls, patch: MaskPatch) -> "SparsePatch":
        where = patch.changed()
        return cls(patch.bbox, np.packbits(where), patch.before[where], patch.after[where])

    def changed(self) -> np.ndarray:
        x0, y0, x1, y1 = self.bbox
        n = (x1 - x0) * (y1 - y0)
        return np.unpackbits(self._bits, count=n).view(bool).reshape(y1 - y0, x1 - x0)

    def apply(self, arr: np.ndarray) -> None:
        _check_fits(self.bbox, self.after.shape[1:], arr)
        arr[_slices(self.bbox)][self.changed()] = self.after

    def revert(self, arr: np.ndarray) -> None:
        _check_fits(self.bbox, self.before.shape[1:], arr)
        arr[_slices(self.bbox)][self.changed()] = self.before

    @property
    def nbytes(self) -> int:
        return int(self._bits.nbytes + self.before.nbytes + self.after.nbytes)


def diff_to_patch(old: np.ndarray, new: np.ndarray) -> MaskPatch | None:
    """One patch turning `old` into `new`, cropped to the box of changed pixels (None if equal)."""
    if old.shape != new.shape:
        raise ValueError(f"cannot diff arrays of shapes {old.shape} and {new.shape}")
    diff = old != new
    if diff.ndim > 2:
        diff = diff.reshape(diff.shape[0], diff.shape[1], -1).any(axis=2)
    box = bbox_of(diff)
    if box is None:
        return None
    sl = _slices(box)
    return MaskPatch(box, old[sl].copy(), new[sl].copy())


class StrokeRecorder:
    """Collects the original pixels of `target` that a stroke overwrites; `finish()` makes one patch.

    Call `before_change(bbox)` before writing pixels inside `bbox`. Originals are saved lazily in
    `TILE`×`TILE` tiles the first time a tile is touched, so a stamp costs a few dictionary look-ups
    plus copying only newly reached tiles: memory is O(touched area), never O(image).
    """

    def __init__(self, target: np.ndarray, *, tile: int = TILE) -> None:
        self.target = target
        self.tile = int(tile)
        self._tiles: dict[tuple[int, int], np.ndarray] = {}
        self._box: BBox | None = None

    @property
    def bbox(self) -> BBox | None:
        """Union of every box announced so far (clipped to the target)."""
        return self._box

    @property
    def nbytes(self) -> int:
        """Bytes held in saved original tiles."""
        return sum(t.nbytes for t in self._tiles.values())

    def before_change(self, bbox: BBox) -> None:
        box = clip_bbox(bbox, self.target.shape)
        if box is None:
            return
        x0, y0, x1, y1 = box
        if self._box is None:
            self._box = box
        else:
            b = self._box
            self._box = (min(b[0], x0), min(b[1], y0), max(b[2], x1), max(b[3], y1))
        t = self.tile
        tiles = self._tiles
        for ty in range(y0 // t, (y1 - 1) // t + 1):
            for tx in range(x0 // t, (x1 - 1) // t + 1):
                if (ty, tx) not in tiles:
                    tiles[ty, tx] = self.target[ty * t : (ty + 1) * t, tx * t : (tx + 1) * t].copy()

    def finish(self, *, compact: bool = False) -> MaskPatch | SparsePatch | None:
        """One patch over the union box, shrunk to the changed pixels; None if nothing changed.

        With `compact=True` a long, thin stroke (whose box is mostly untouched) comes back as a
        `SparsePatch` when that is smaller. The recorder is reset and can record the next stroke.
        """
        box, tiles = self._box, self._tiles
        self._box, self._tiles = None, {}
        if box is None:
            return None
        x0, y0, x1, y1 = box
        after = self.target[y0:y1, x0:x1]
        before = after.copy()
        t = self.tile
        for (ty, tx), saved in tiles.items():
            # the saved tile covers rows ty*t.. and columns tx*t.. of the target; keep its part in box
            ty0, tx0 = ty * t, tx * t
            iy0, iy1 = max(ty0, y0), min(ty0 + saved.shape[0], y1)
            ix0, ix1 = max(tx0, x0), min(tx0 + saved.shape[1], x1)
            if iy1 > iy0 and ix1 > ix0:
                before[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = saved[iy0 - ty0 : iy1 - ty0,
                                                                          ix0 - tx0 : ix1 - tx0]
        inner = diff_to_patch(before, after)  # cropped to the changed pixels, in union-box coordinates
        if inner is None:
            return None
        bx0, by0, bx1, by1 = inner.bbox
        patch = MaskPatch((bx0 + x0, by0 + y0, bx1 + x0, by1 + y0), inner.before, inner.after)
        return patch.compact() if compact else patch

    def cancel(self) -> None:
        """Forget the stroke without making a patch (the pixels stay as they are)."""
        self._box, self._tiles = None, {}

    def restore(self) -> None:
        """Write the saved originals back into the target and forget the stroke (abort a stroke)."""
        t = self.tile
        for (ty, tx), saved in self._tiles.items():
            self.target[ty * t : ty * t + saved.shape[0], tx * t : tx * t + saved.shape[1]] = saved
        self.cancel()
