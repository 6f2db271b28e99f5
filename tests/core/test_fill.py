"""Flood fill against a plain BFS, polygon rasterising, mask fill with undo patches."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest

from deeplab_studio.core import fill
from deeplab_studio.core.fill import fill_mask, flood_region, polygon_mask


def ref_flood(labels: np.ndarray, seed, connectivity: int = 4) -> np.ndarray:
    h, w = labels.shape
    sx, sy = seed
    v = labels[sy, sx]
    out = np.zeros((h, w), bool)
    out[sy, sx] = True
    steps = [(1, 0), (-1, 0), (0, 1), (0, -1)]
    if connectivity == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    q = deque([(sy, sx)])
    while q:
        y, x = q.popleft()
        for dy, dx in steps:
            yy, xx = y + dy, x + dx
            if 0 <= yy < h and 0 <= xx < w and not out[yy, xx] and labels[yy, xx] == v:
                out[yy, xx] = True
                q.append((yy, xx))
    return out


@pytest.mark.parametrize("levels", [0, 1000])  # 0: union-find path only; 1000: BFS path only
def test_flood_matches_reference_bfs_on_random_maps(monkeypatch, levels) -> None:
    monkeypatch.setattr(fill, "_BFS_LEVELS", levels)
    rng = np.random.default_rng(levels)
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        k = int(rng.integers(2, 4))
        labels = (rng.random((h, w)) * k).astype(np.uint8)
        if rng.random() < 0.5:  # smoother blobs as well as noise
            labels = np.repeat(np.repeat(labels[::4, ::4], 4, 0), 4, 1)[:h, :w].copy()
            h, w = labels.shape
        seed = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        for conn in (4, 8):
            got = flood_region(labels, (seed[0] + 0.3, seed[1] + 0.9), connectivity=conn)
            assert np.array_equal(got, ref_flood(labels, seed, conn)), (h, w, seed, conn)


@pytest.mark.parametrize("levels", [8, fill._BFS_LEVELS])
def test_flood_long_winding_region(monkeypatch, levels) -> None:
    # a serpentine corridor of 61 run rows: longer than 8 BFS levels (union-find path)
    monkeypatch.setattr(fill, "_BFS_LEVELS", levels)
    labels = np.ones((61, 64), np.uint8)
    labels[::2, :] = 0
    for i, y in enumerate(range(1, 61, 2)):
        labels[y, 0 if i % 2 else 63] = 0
    got = flood_region(labels, (0, 0))
    assert np.array_equal(got, ref_flood(labels, (0, 0)))
    assert np.array_equal(got, labels == 0)


def test_paint_runs_cumsum_path_matches_loop(monkeypatch) -> None:
    rng = np.random.default_rng(9)
    labels = (rng.random((40, 50)) < 0.6).astype(np.uint8)
    loop = flood_region(labels, (0, 0), connectivity=8)
    monkeypatch.setattr(fill, "_LOOP_RUNS", 0)
    assert np.array_equal(flood_region(labels, (0, 0), connectivity=8), loop)
    assert np.array_equal(loop, ref_flood(labels, (0, 0), 8))


def test_flood_bad_input() -> None:
    labels = np.zeros((5, 5), np.uint8)
    with pytest.raises(ValueError):
        flood_region(labels, (5, 0))
    with pytest.raises(ValueError):
        flood_region(labels, (-0.5, 0))
    with pytest.raises(ValueError):
        flood_region(labels, (1, 1), connectivity=6)


def ref_inside(shape, pts) -> np.ndarray:
    """Crossing-number test at pixel centres (half-open rule), one pixel at a time."""
    h, w = shape
    out = np.zeros((h, w), bool)
    n = len(pts)
    for i in range(h):
        yc = i + 0.5
        for j in range(w):
            xc = j + 0.5
            inside = False
            for k in range(n):
                (ax, ay), (bx, by) = pts[k], pts[(k + 1) % n]
                if (ay <= yc < by) or (by <= yc < ay):
                    x = ax + (yc - ay) * (bx - ax) / (by - ay)
                    if x < xc:
                        inside = not inside
            out[i, j] = inside
    return out


def seg_dist(px, py, ax, ay, bx, by) -> float:
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy
    t = 0.0 if ll == 0 else min(max(((px - ax) * dx + (py - ay) * dy) / ll, 0.0), 1.0)
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


def test_polygon_rectangle_exact() -> None:
    m = polygon_mask((16, 16), [(2, 3), (10, 3), (10, 8), (2, 8)])
    ref = np.zeros((16, 16), bool)
    ref[3:9, 2:11] = True  # centres inside plus the outline on x=10 and y=8
    assert np.array_equal(m, ref)


def test_polygon_random_matches_reference_plus_outline() -> None:
    rng = np.random.default_rng(3)
    for _ in range(25):
        n = int(rng.integers(3, 9))
        pts = [tuple(p) for p in rng.uniform(-6, 38, (n, 2))]
        m = polygon_mask((32, 32), pts)
        inside = ref_inside((32, 32), pts)
        assert not (inside & ~m).any()  # every pixel whose centre is inside is set
        for i, j in zip(*np.nonzero(m & ~inside)):  # extra pixels lie on the outline
            d = min(seg_dist(j + 0.5, i + 0.5, *pts[k], *pts[(k + 1) % n]) for k in range(n))
            assert d <= math.sqrt(0.5) + 1e-9
        for x, y in pts:  # vertices inside the image are always set
            if 0 <= x < 32 and 0 <= y < 32:
                assert m[int(y), int(x)]


def test_polygon_rules_and_degenerate() -> None:
    star = [(16 + 14 * math.cos(a), 16 + 14 * math.sin(a))
            for a in np.linspace(-math.pi / 2, 3.5 * math.pi, 5, endpoint=False)]
    eo = polygon_mask((32, 32), star)
    nz = polygon_mask((32, 32), star, rule="nonzero")
    assert not eo[16, 16] and nz[16, 16]
    assert (nz | eo).sum() == nz.sum()
    line = polygon_mask((10, 10), [(1.5, 4.5), (8.5, 4.5)])  # two points: just the outline
    assert np.array_equal(np.nonzero(line)[0], np.full(8, 4)) and line.sum() == 8
    assert not polygon_mask((10, 10), []).any()
    assert not polygon_mask((10, 10), [(20, 20), (30, 20), (25, 30)]).any()
    with pytest.raises(ValueError):
        polygon_mask((10, 10), [(1, 1), (2, 2), (3, 1)], rule="winding")


def test_fill_mask_patches_protect_and_edit_mask() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, (40, 40)).astype(np.uint8)
    edit = np.zeros_like(labels, bool)
    orig = labels.copy()
    region = polygon_mask(labels.shape, [(5, 5), (30, 8), (20, 33)])
    protect = labels == 2
    lp, ep = fill_mask(labels, region, 7, protect=protect, edit_mask=edit)
    target = region & ~protect
    assert np.array_equal(labels == 7, target)
    assert np.array_equal(labels[~target], orig[~target])
    assert np.array_equal(edit, target)
    assert lp.bbox == ep.bbox
    lp.revert(labels)
    ep.revert(edit)
    assert np.array_equal(labels, orig) and not edit.any()
    lp.apply(labels)
    assert np.array_equal(labels == 7, target)
    # without an edit mask the second patch is None; nothing writable gives None
    labels2 = orig.copy()
    lp2, ep2 = fill_mask(labels2, region, 1)
    assert ep2 is None and np.array_equal(labels2[region], np.full(region.sum(), 1, np.uint8))
    assert fill_mask(orig.copy(), np.zeros_like(region), 1) is None
    assert fill_mask(orig.copy(), region, 1, protect=np.ones_like(region)) is None
    with pytest.raises(ValueError):
        fill_mask(orig, region[:10], 1)


def test_flood_then_fill_round_trip() -> None:
    labels = np.zeros((30, 30), np.uint8)
    labels[5:20, 5:20] = 3
    labels[10, :] = 4
    orig = labels.copy()
    region = flood_region(labels, (6, 6))
    assert region.sum() == 5 * 15
    lp, _ = fill_mask(labels, region, 9)
    assert lp.bbox == (5, 5, 20, 10)
    lp.revert(labels)
    assert np.array_equal(labels, orig)
