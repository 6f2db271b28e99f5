"""Region tools on label maps: flood fill of a connected region, polygon rasterising, mask fill.

`flood_region` works on horizontal runs instead of pixels: the runs of the seed's value are found
in one vectorised pass, runs touching across rows are linked, and the links are resolved with a
vectorised union-find (hook to the smaller root, then pointer jumping). Cost follows the number of
runs, so a large, simple region is cheap however many pixels it has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .patches import MaskPatch, bbox_of

Point = tuple[float, float]

_BFS_LEVELS = 32  # run rows searched breadth-first before switching to the union-find
_LOOP_RUNS = 50_000  # up to this many runs, paint them with slices (cheaper than a cumsum pass)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True in a 2-D mask: (row, start, end) int64 arrays, end exclusive."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past its end
    flat = d.ravel()
    starts = np.flatnonzero(flat == 1)
    ends = np.flatnonzero(flat == -1)
    row = starts // (w + 1)
    return row, starts - row * (w + 1), ends - row * (w + 1)


def _touching(row: np.ndarray, start: np.ndarray, end: np.ndarray, kstart: np.ndarray,
              kend: np.ndarray, stride: int, which: np.ndarray, dy: int,
              c: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs in row `row+dy` touching each run in `which`: (index into which, touching run)."""
    other = (row[which] + dy) * stride
    lo = np.searchsorted(kend, other + start[which] - c, side="right")
    hi = np.searchsorted(kstart, other + end[which] + c, side="left")
    cnt = np.maximum(hi - lo, 0)
    src = np.repeat(np.arange(which.size), cnt)
    offs = np.arange(src.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    return src, np.repeat(lo, cnt) + offs


def _grow(seed_run: int, row, start, end, kstart, kend, stride: int, c: int,
          max_levels: int) -> np.ndarray | None:
    """Breadth-first search over runs from the seed run; None when it needs over `max_levels`."""
    seen = np.zeros(row.size, bool)
    seen[seed_run] = True
    frontier = np.array([seed_run])
    for _ in range(max_levels):
        found = [_touching(row, start, end, kstart, kend, stride, frontier, dy, c)[1]
                 for dy in (-1, 1)]
        nxt = np.unique(np.concatenate(found))
        nxt = nxt[~seen[nxt]]
        if nxt.size == 0:
            return seen
        seen[nxt] = True
        frontier = nxt
    return None


def _components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Root (smallest member) of each node's connected component."""
    parent = np.arange(n)
    while True:
        pu, pv = parent[src], parent[dst]
        diff = pu != pv
        if not diff.any():
            return parent
        np.minimum.at(parent, np.maximum(pu, pv)[diff], np.minimum(pu, pv)[diff])
        while True:  # pointer jumping until every node points at its root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt


def _paint_runs(shape: tuple[int, int], row: np.ndarray, start: np.ndarray,
                end: np.ndarray) -> np.ndarray:
    """A full-size bool mask with the given runs set, built over the runs' box only."""
    out = np.zeros(shape, bool)
    if row.size == 0:
        return out
    if row.size <= _LOOP_RUNS:
        for y, x0, x1 in zip(row.tolist(), start.tolist(), end.tolist()):
            out[y, x0:x1] = True
        return out
    y0, y1 = int(row.min()), int(row.max()) + 1
    x0, x1 = int(start.min()), int(end.max())
    delta = np.zeros((y1 - y0, x1 - x0 + 1), np.int8)
    delta[row - y0, start - x0] = 1
    delta[row - y0, end - x0] = -1
    out[y0:y1, x0:x1] = np.cumsum(delta[:, :-1], axis=1, dtype=np.int8).view(bool)
    return out


def flood_region(labels: np.ndarray, seed_xy: Point, *, connectivity: int = 4) -> np.ndarray:
    """Bool mask of the connected region of equal labels that holds the pixel under `seed_xy`.

    Raises ValueError for a seed outside the image or a connectivity other than 4 or 8.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D array, got shape {labels.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    h, w = labels.shape
    sx, sy = math.floor(float(seed_xy[0])), math.floor(float(seed_xy[1]))
    if not (0 <= sx < w and 0 <= sy < h):
        raise ValueError(f"seed {seed_xy} lies outside the {w}×{h} image")
    row, start, end = _runs(labels == labels[sy, sx])
    c = 1 if connectivity == 8 else 0
    stride = w + 2
    kstart = row * stride + start  # global keys: runs are sorted by both
    kend = row * stride + end
    # the seed's run: the last run starting at or before the seed in the seed's row
    seed_run = int(np.searchsorted(kstart, sy * stride + sx, side="right")) - 1
    # small or compact regions: a short breadth-first search over runs touches only the region;
    # long, winding ones: link all touching runs and resolve them with a vectorised union-find
    keep = _grow(seed_run, row, start, end, kstart, kend, stride, c, _BFS_LEVELS)
    if keep is None:
        src, dst = _touching(row, start, end, kstart, kend, stride, np.arange(row.size), 1, c)
        root = _components(row.size, src, dst)
        keep = root == root[seed_run]
    return _paint_runs((h, w), row[keep], start[keep], end[keep])


def _outline(mask: np.ndarray, pts: np.ndarray) -> None:
    """Mark the pixels that the closed polyline through `pts` passes over (sampled densely)."""
    h, w = mask.shape
    a = pts
    b = np.roll(pts, -1, axis=0)
    for (ax, ay), (bx, by) in zip(a, b):
        n = int(math.ceil(2.0 * max(abs(bx - ax), abs(by - ay)))) + 1
        t = np.linspace(0.0, 1.0, n + 1)
        xs = np.floor(ax + (bx - ax) * t).astype(np.int64)
        ys = np.floor(ay + (by - ay) * t).astype(np.int64)
        ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        mask[ys[ok], xs[ok]] = True


def polygon_mask(shape_hw: tuple[int, int], points_xy: Sequence[Point], *,
                 rule: str = "evenodd") -> np.ndarray:
    """Bool mask of a polygon: pixels whose centre (j+0.5, i+0.5) is inside, plus its outline.

    `rule` is "evenodd" or "nonzero". Points may lie outside the image (the result is clipped).
    Work is vectorised over the polygon's clipped box: O(rows × edges + box area).
    """
    if rule not in ("evenodd", "nonzero"):
        raise ValueError(f"rule must be 'evenodd' or 'nonzero', got {rule!r}")
    h, w = int(shape_hw[0]), int(shape_hw[1])
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    mask = np.zeros((h, w), bool)
    if pts.shape[0] == 0:
        return mask
    if not np.isfinite(pts).all():
        raise ValueError("polygon points must be finite")
    x0 = max(int(math.floor(pts[:, 0].min())), 0)
    y0 = max(int(math.floor(pts[:, 1].min())), 0)
    x1 = min(int(math.floor(pts[:, 0].max())) + 1, w)
    y1 = min(int(math.floor(pts[:, 1].max())) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return mask
    if pts.shape[0] >= 3:
        ax, ay = pts[:, 0], pts[:, 1]
        bx, by = np.roll(ax, -1), np.roll(ay, -1)
        yc = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5  # row centres
        up = (ay <= yc) & (by > yc)  # half-open crossing rule: each crossing counted once
        down = (by <= yc) & (ay > yc)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = ax + (yc - ay) * (bx - ax) / (by - ay)
        # pixel j lies right of a crossing at xc when j + 0.5 > xc; mark the first such column
        rr, ee = np.nonzero(up | down)
        cols = np.clip(np.floor(xc[rr, ee] - 0.5) + 1 - x0, 0, x1 - x0).astype(np.int64)
        acc = np.zeros((y1 - y0, x1 - x0 + 1), np.int8 if rule == "evenodd" else np.int32)
        if rule == "evenodd":  # parity survives int8 wrap-around
            np.bitwise_xor.at(acc, (rr, cols), 1)
            wind = np.bitwise_xor.accumulate(acc[:, :-1], axis=1)
            mask[y0:y1, x0:x1] = wind.view(bool)
        else:
            np.add.at(acc, (rr, cols), np.where(up[rr, ee], 1, -1).astype(np.int32))
            mask[y0:y1, x0:x1] = np.cumsum(acc[:, :-1], axis=1) != 0
    _outline(mask, pts)
    return mask


def fill_mask(labels: np.ndarray, mask: np.ndarray, value: int, *,
              protect: np.ndarray | None = None,
              edit_mask: np.ndarray | None = None) -> tuple[MaskPatch, MaskPatch | None] | None:
    """Write `value` where `mask` is True and `protect` is not; mark those pixels in `edit_mask`.

    Returns (labels patch, edit-mask patch) over the box of the written pixels — the edit patch is
    None when no edit mask is given — or None when there is nothing to write.
    """
    if labels.ndim != 2 or mask.shape != labels.shape:
        raise ValueError(f"mask shape {mask.shape} must equal the 2-D labels shape {labels.shape}")
    if not 0 <= int(value) <= 255:
        raise ValueError(f"fill value must be 0..255, got {value}")
    for name, arr in (("protect", protect), ("edit_mask", edit_mask)):
        if arr is not None and arr.shape != labels.shape:
            raise ValueError(f"{name} shape {arr.shape} differs from labels {labels.shape}")
        if arr is not None and arr.dtype != bool:
            raise ValueError(f"{name} must be a bool array, got {arr.dtype}")
    box = bbox_of(mask)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    m = mask[y0:y1, x0:x1].astype(bool, copy=False)
    if protect is not None:
        m = m & ~protect[y0:y1, x0:x1]
        inner = bbox_of(m)
        if inner is None:
            return None
        m = m[inner[1] : inner[3], inner[0] : inner[2]]
        x0, y0, x1, y1 = inner[0] + x0, inner[1] + y0, inner[2] + x0, inner[3] + y0
    region = labels[y0:y1, x0:x1]
    before = region.copy()
    region[m] = value
    lpatch = MaskPatch((x0, y0, x1, y1), before, region.copy())
    epatch = None
    if edit_mask is not None:
        ereg = edit_mask[y0:y1, x0:x1]
        ebefore = ereg.copy()
        ereg[m] = True
        epatch = MaskPatch((x0, y0, x1, y1), ebefore, ereg.copy())
    return lpatch, epatch
