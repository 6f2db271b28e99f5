"""Snap after a stroke: milliseconds per brush stroke on 513² real images, band vs whole image.

    .venv/bin/python benchmarks/bench_snap_stroke.py [--strokes 6]

On each of the 7 val images of tests/data/voc_real (513×513) the label map starts as the real
DeepLab v3+ R101 prediction in `vainf_r101_pred/`. Strokes follow the simulated annotator's
brush rule (largest error region, its most interior pixel, the largest disk that fits, capped
at 50 px), as a click and as a 40 px drag through that pixel; and, at each of those pixels, a
25 px-radius brush dragged 80 px (a larger stroke, as a user paints). Each stroke is timed from press to
the committed patch (BrushTool.release), for:

- plain: no snap;
- band: the snap as the app runs it (`StrokeSnapper(ml.crf.refine)`, band = stroke box + 16 px);
- whole image: the same snap with the band grown to the whole image (the baseline);
- whole-image refine_labels: a plain hard-label CRF of the whole label map (another baseline).

Also printed: pixels right (vs the ground truth) gained by the snap over the plain stroke.
All figures come from this one run; the aim (issue 14) is < 100 ms per stroke.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from deeplab_studio.core.labels import voc_colormap
from deeplab_studio.ml.crf import refine, refine_labels
from deeplab_studio.session.document import AnnotationDocument
from deeplab_studio.session.snap import StrokeSnapper
from deeplab_studio.session.tools import Mods, ToolBox, ToolContext

VOC = Path(__file__).resolve().parents[1] / "tests" / "data" / "voc_real"


def prediction(name: str) -> np.ndarray:
    rgb = np.asarray(Image.open(VOC / "vainf_r101_pred" / f"{name}.png").convert("RGB")).astype(np.int32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    out = np.zeros(code.shape, np.uint8)
    for k, c in enumerate(voc_colormap(256)[:21].astype(np.int32)):
        out[code == ((c[0] << 16) | (c[1] << 8) | c[2])] = k
    return out


def next_stroke(labels: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, class, radius) of the simulated annotator's next brush stamp, None when none is left."""
    err = ((labels != gt) & (gt != 255)).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(err, connectivity=4)
    if n < 2:
        return None
    region = comp == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    dist = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y), int(gt[y, x]), min(50, max(0, int(np.ceil(dist[y, x])) - 1))


def timed_stroke(image, labels, points, cls, radius, snap) -> tuple[float, np.ndarray]:
    doc = AnnotationDocument(image, labels.copy())
    ctx = ToolContext(document=lambda: doc, commit=lambda *a: None, active_class=cls, brush_size=2 * radius + 1)
    ctx.snap = snap
    tool = ToolBox(ctx).tools["brush"]
    t0 = time.perf_counter()
    tool.press(points[0], Mods())
    for p in points[1:]:
        tool.move(p, Mods())
    tool.release(points[-1], Mods())
    return (time.perf_counter() - t0) * 1000.0, doc.labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strokes", type=int, default=6, help="strokes per image and kind (default 6)")
    args = ap.parse_args()
    variants = {"plain": None, "band": StrokeSnapper(refine), "whole image": StrokeSnapper(refine, margin=10_000)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    big_times: dict[str, list[float]] = {"plain": [], "band": []}
    whole_labels, gains, radii = [], [], []
    names = sorted(p.stem for p in (VOC / "vainf_r101_pred").glob("*.png"))
    refine_labels(np.zeros((8, 8, 3), np.uint8), np.eye(8, dtype=np.uint8))  # import pydensecrf first
    for name in names:
        image = np.asarray(Image.open(VOC / "images" / f"{name}.png").convert("RGB"))
        gt = np.asarray(Image.open(VOC / "masks" / f"{name}.png"))
        labels = prediction(name)
        t0 = time.perf_counter()
        refine_labels(image, labels)
        whole_labels.append((time.perf_counter() - t0) * 1000.0)
        for k in range(args.strokes):
            stroke = next_stroke(labels, gt)
            if stroke is None:
                break
            x, y, cls, r = stroke
            points = [(x + 0.5, y + 0.5)] if k % 2 == 0 else [(x - 19.5, y + 0.5), (x + 20.5, y + 0.5)]
            results = {}
            big = [(x - 39.5, y + 0.5), (x + 40.5, y + 0.5)]  # a 25 px brush dragged 80 px
            for kind in ("plain", "band"):
                big_times[kind].append(timed_stroke(image, labels, big, cls, 25, variants[kind])[0])
            for kind, snap in variants.items():
                ms, out = timed_stroke(image, labels, points, cls, r, snap)
                times[kind].append(ms)
                results[kind] = out
            valid = gt != 255
            gains.append(int(((results["band"] == gt) & valid).sum()) - int(((results["plain"] == gt) & valid).sum()))
            radii.append(r)
            labels = results["plain"]  # the annotator goes on with plain strokes
    n = len(times["plain"])
    print(f"{n} strokes on {len(names)} real 513² images (radius mean {np.mean(radii):.1f}, max {max(radii)} px; "
          f"clicks and 40 px drags alternate)")
    print(f"{'':<28}{'median ms':>10}{'p90 ms':>9}{'max ms':>9}")
    for kind, ts in times.items():
        print(f"{kind:<28}{np.median(ts):>10.1f}{np.percentile(ts, 90):>9.1f}{max(ts):>9.1f}")
    print(f"{'whole-image refine_labels':<28}{np.median(whole_labels):>10.1f}{np.percentile(whole_labels, 90):>9.1f}"
          f"{max(whole_labels):>9.1f}")
    for kind, ts in big_times.items():
        print(f"{kind + ', r 25 px, 80 px drag':<28}{np.median(ts):>10.1f}{np.percentile(ts, 90):>9.1f}{max(ts):>9.1f}")
    band, whole = np.median(times["band"]), np.median(times["whole image"])
    print(f"band vs whole-image snap: {whole / band:.1f}× faster (medians); "
          f"strokes over 100 ms: {sum(t > 100 for t in times['band'])} of {n}")
    print(f"pixels right gained by the snap per stroke: mean {np.mean(gains):+.0f}, "
          f"worst {min(gains):+d}, best {max(gains):+d}")


if __name__ == "__main__":
    main()
