"""Brush hot path: per-event cost of a 500-event stroke on an 8000×6000 label map.

Measures, in one process:
  1. `paint_line` per mouse event with two `StrokeRecorder`s (labels + edit mask), as the GUI
     calls it, then `finish()`; patch size versus the image.
  2. A naive baseline: an image-sized bool mask per stamp, written with `labels[mask] = value`
     (run for fewer stamps: it is slow).
  3. The exact capsule versus stamping disks at spacing r/2 along the segment, for short and long
     mouse moves (which way of making a gap-free line is cheaper).

  4. Flood fill of a large region (4000×3000 map) against a plain Python BFS on a smaller one,
     and `polygon_mask` of a large polygon.
  5. `ConfusionMatrix.update` on a 4000×3000 uint8 pair against a plain int64 bincount.

Usage: python benchmarks/bench_brush_core.py [--radius 20] [--events 500]
"""

from __future__ import annotations

import argparse
import math
import time

from collections import deque

import numpy as np

from deeplab_studio.core.brush import disk, paint_disk, paint_line
from deeplab_studio.core.fill import flood_region, polygon_mask
from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.core.patches import StrokeRecorder

H, W = 6000, 8000


def stats(ts: list[float]) -> tuple[float, float]:
    a = np.asarray(ts) * 1e6
    return float(np.median(a)), float(np.percentile(a, 99))


def wavy_points(n: int, step: float) -> list[tuple[float, float]]:
    return [(500 + i * step, 3000 + 400 * math.sin(i * step / 300)) for i in range(n + 1)]


def maps() -> tuple[np.ndarray, np.ndarray]:
    """A label map and edit mask whose memory is really touched, as after loading from disk."""
    return np.full((H, W), 0, np.uint8), np.full((H, W), False)


def run_ours(radius: int, events: int, step: float) -> tuple[list[float], float, int, int, tuple]:
    labels, edit = maps()
    recs = (StrokeRecorder(labels), StrokeRecorder(edit))
    pts = wavy_points(events, step)
    ts = []
    for a, b in zip(pts[:-1], pts[1:]):
        t = time.perf_counter()
        paint_line(labels, a, b, radius, 3, edit_mask=edit, recorders=recs)
        ts.append(time.perf_counter() - t)
    t = time.perf_counter()
    lp, ep = recs[0].finish(), recs[1].finish()
    fin = time.perf_counter() - t
    compact = lp.compact().nbytes + ep.compact().nbytes
    return ts, fin, lp.nbytes + ep.nbytes, compact, lp.bbox


def run_naive(radius: int, stamps: int, step: float) -> list[float]:
    """An image-sized bool mask per stamp (disk pasted in), written with `labels[mask] = value`;
    the undo copy of both maps is made once, at the press."""
    labels, edit = maps()
    _undo = labels.copy(), edit.copy()
    d = disk(radius)
    ts = []
    for x, y in wavy_points(stamps, step)[:stamps]:
        t = time.perf_counter()
        cx, cy = math.floor(x), math.floor(y)
        mask = np.zeros((H, W), bool)
        mask[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1] = d
        labels[mask] = 3
        edit[mask] = True
        ts.append(time.perf_counter() - t)
    return ts


def stamp_line(labels, a, b, radius, value, edit, recs) -> None:
    """Gap-free line by disks at spacing <= r/2 (the alternative to the exact capsule)."""
    n = max(1, math.ceil(math.hypot(b[0] - a[0], b[1] - a[1]) / max(radius / 2, 0.5)))
    for k in range(1, n + 1):
        p = (a[0] + (b[0] - a[0]) * k / n, a[1] + (b[1] - a[1]) * k / n)
        paint_disk(labels, p, radius, value, edit_mask=edit, recorders=recs)


def capsule_vs_stamps(radius: int, step: float, events: int) -> tuple[float, float]:
    out = []
    for fn in ("capsule", "stamps"):
        labels, edit = maps()
        recs = (StrokeRecorder(labels), StrokeRecorder(edit))
        pts = wavy_points(events, step)
        pts = [(x % (W - 100), y) for x, y in pts]
        ts = []
        for a, b in zip(pts[:-1], pts[1:]):
            t = time.perf_counter()
            if fn == "capsule":
                paint_line(labels, a, b, radius, 3, edit_mask=edit, recorders=recs)
            else:
                stamp_line(labels, a, b, radius, 3, edit, recs)
            ts.append(time.perf_counter() - t)
        out.append(stats(ts)[0])
    return out[0], out[1]


def python_bfs(labels: np.ndarray, sx: int, sy: int) -> np.ndarray:
    """The plain baseline: a 4-connected BFS over pixels with a deque."""
    h, w = labels.shape
    v = labels[sy, sx]
    out = np.zeros((h, w), bool)
    out[sy, sx] = True
    q = deque([(sy, sx)])
    lab = labels.tolist()
    seen = out
    while q:
        y, x = q.popleft()
        for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= yy < h and 0 <= xx < w and not seen[yy, xx] and lab[yy][xx] == v:
                seen[yy, xx] = True
                q.append((yy, xx))
    return out


def scene(h: int, w: int) -> np.ndarray:
    """A label map with one big region (class 1) holding holes and a bar of class 2."""
    labels = np.zeros((h, w), np.uint8)
    labels[h // 30 : h - h // 30, w // 40 : w - w // 40] = 1
    labels[h // 6 : h // 5, w // 8 : 3 * w // 4] = 2
    yy, xx = np.ogrid[0:h, 0:w]
    for k in range(12):
        cy, cx = (k * 0.37 % 1) * h, (k * 0.61 % 1) * w
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < (h / 25) ** 2] = 3
    return labels


def bench_fill() -> None:
    small = scene(300, 400)
    t = time.perf_counter()
    ref = python_bfs(small, 200, 150)
    t_bfs = time.perf_counter() - t
    t = time.perf_counter()
    ours = flood_region(small, (200, 150))
    t_ours = time.perf_counter() - t
    assert np.array_equal(ref, ours)
    print(f"flood fill 400x300 ({int(ours.sum())} px): python BFS {t_bfs * 1e3:.1f} ms, "
          f"flood_region {t_ours * 1e3:.2f} ms, ratio {t_bfs / t_ours:.0f}x")
    big = scene(3000, 4000)
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        region = flood_region(big, (2000, 1500))
        ts.append(time.perf_counter() - t)
    print(f"flood fill 4000x3000 ({int(region.sum())} px region): {min(ts) * 1e3:.0f} ms (best of 3); "
          f"python BFS extrapolated per pixel ~{t_bfs / ref.sum() * region.sum():.0f} s")
    pts = [(100.5, 80.2), (3900, 300), (3500, 2900), (2000, 1200), (200, 2800)]
    t = time.perf_counter()
    m = polygon_mask((3000, 4000), pts)
    print(f"polygon_mask 4000x3000 ({int(m.sum())} px): {(time.perf_counter() - t) * 1e3:.0f} ms")


def bench_metrics() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 21, (3000, 4000)).astype(np.uint8)
    pred = rng.integers(0, 21, (3000, 4000)).astype(np.uint8)
    gt[:300] = 255
    t = time.perf_counter()
    g, p = gt.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    keep = g != 255
    plain = np.bincount(g[keep] * 21 + p[keep], minlength=21 * 21).reshape(21, 21)
    t_plain = time.perf_counter() - t
    cm = ConfusionMatrix(21)
    t = time.perf_counter()
    cm.update(gt, pred)
    t_ours = time.perf_counter() - t
    assert np.array_equal(cm.matrix, plain)
    print(f"ConfusionMatrix.update 4000x3000 uint8: {t_ours * 1e3:.0f} ms; plain int64 bincount "
          f"{t_plain * 1e3:.0f} ms; ratio {t_plain / t_ours:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--radius", type=int, default=20, help="brush radius (20 = a ~40 px brush)")
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--naive-stamps", type=int, default=15)
    args = ap.parse_args()
    r = args.radius
    disk(r)  # warm the cache
    print(f"image {W}x{H}, brush radius {r} (diameter {2 * r + 1}), {args.events} mouse events 6 px apart")

    ts, fin, nbytes, compact, box = run_ours(r, args.events, 6.0)
    med, p99 = stats(ts)
    print(f"ours   paint_line + 2 recorders: median {med:8.1f} us  p99 {p99:8.1f} us per event")
    print(f"       finish(): {fin * 1e3:.1f} ms; patches {nbytes / 1e6:.2f} MB over box {box} "
          f"({nbytes / (H * W * 2):.2%} of the two full maps); compact (SparsePatch) "
          f"{compact / 1e6:.2f} MB ({compact / (H * W * 2):.2%})")

    nts = run_naive(r, args.naive_stamps, 6.0)
    nmed, np99 = stats(nts)
    print(f"naive  full-image mask per stamp: median {nmed:8.1f} us  p99 {np99:8.1f} us per stamp "
          f"({args.naive_stamps} stamps)")
    print(f"ratio  naive / ours (median): {nmed / med:.0f}x")

    print("gap-free line: exact capsule vs disks every r/2 (median us per event)")
    for step in (2.0, 8.0, 32.0, 128.0):
        cap, stp = capsule_vs_stamps(r, step, 120)
        print(f"  move {step:5.0f} px: capsule {cap:8.1f}   stamps {stp:8.1f}   stamps/capsule {stp / cap:.2f}")
    bench_fill()
    bench_metrics()


if __name__ == "__main__":
    main()
