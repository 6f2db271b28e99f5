"""The wand's superpixels: seconds per image, click latency, and how well segments hold objects.

    .venv/bin/python benchmarks/bench_wand.py [--skip-baseline]

1. tests/data/voc_real (10 real VOC images, ~0.2 MP): seconds for the three scales
   (`compute_superpixels`), and the achievable segmentation accuracy (ASA: each superpixel
   labelled with its majority ground-truth class; the share of non-void pixels then right) per
   scale, for SLIC compactness 5, 10, 20 (the chosen one) and 30.
2. 12 MP (4000×3000, the first image scaled up bicubically, its mask with nearest): seconds for
   `compute_superpixels` (segmented on a 0.6 MP copy, masks made at full size per click) vs a
   plain full-resolution scikit-image SLIC of the same three scales (the baseline), the ratio;
   the wand's latency per click (full-size mask of the segment under the cursor) per scale; ASA
   of both at full size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage.segmentation import slic

from deeplab_studio.session.superpixels import COMPACTNESS, SCALES, compute_superpixels

VOC = Path(__file__).resolve().parents[1] / "tests" / "data" / "voc_real"


def asa(field: np.ndarray, gt: np.ndarray) -> float:
    valid = gt != 255
    joint = np.bincount(field[valid].astype(np.int64) * 256 + gt[valid], minlength=(int(field.max()) + 1) * 256)
    return float(joint.reshape(-1, 256).max(axis=1).sum() / valid.sum())


def full_field(sp, scale: int) -> np.ndarray:
    """The full-size label field the wand's masks make up (each segment's mask written in turn)."""
    out = np.zeros(sp.shape, np.int32)
    for seg in range(sp.levels[scale].count):
        (x0, y0, x1, y1), crop = sp.mask(scale, seg)
        out[y0:y1, x0:x1][crop] = seg
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-baseline", action="store_true", help="leave out the full-resolution SLIC (~1-2 min)")
    args = ap.parse_args()
    pairs = [(np.asarray(Image.open(p).convert("RGB")), np.asarray(Image.open(VOC / "masks" / f"{p.stem}.png")))
             for p in sorted((VOC / "images").iterdir())]
    print(f"1. {len(pairs)} real VOC images; scales {SCALES} superpixels per image")
    print(f"{'compactness':<14}{'s per image':>12}" + "".join(f"{'ASA ' + str(n):>11}" for n in SCALES)
          + f"{'segments':>22}")
    for comp in (5.0, 10.0, COMPACTNESS, 30.0):
        t0 = time.perf_counter()
        sps = [compute_superpixels(img, compactness=comp) for img, _ in pairs]
        secs = (time.perf_counter() - t0) / len(pairs)
        scores = [np.mean([asa(sp.levels[k].field, gt) for sp, (_, gt) in zip(sps, pairs)]) for k in range(len(SCALES))]
        counts = "/".join(f"{np.mean([sp.levels[k].count for sp in sps]):.0f}" for k in range(len(SCALES)))
        mark = " (chosen)" if comp == COMPACTNESS else ""
        print(f"{comp:<14g}{secs:>12.2f}" + "".join(f"{s:>11.4f}" for s in scores) + f"{counts:>22}{mark}")

    img, gt = pairs[0]
    big = cv2.resize(img, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    big_gt = cv2.resize(gt, (4000, 3000), interpolation=cv2.INTER_NEAREST)
    print("\n2. 12 MP (4000×3000)")
    t0 = time.perf_counter()
    sp = compute_superpixels(big)
    ours = time.perf_counter() - t0
    print(f"compute_superpixels (0.6 MP copy, 3 scales): {ours:.2f} s")
    rng = np.random.default_rng(0)
    points = rng.uniform((0, 0), (4000, 3000), (30, 2))
    for k in range(len(SCALES)):
        ms = []
        for x, y in points:
            t0 = time.perf_counter()
            sp.region_at(k, float(x), float(y))
            ms.append((time.perf_counter() - t0) * 1000)
        print(f"  wand click, scale {k} ({SCALES[k]}): median {np.median(ms):.1f} ms, max {max(ms):.1f} ms; "
              f"ASA at full size {asa(full_field(sp, k), big_gt):.4f}")
    if args.skip_baseline:
        return
    t0 = time.perf_counter()
    fields = [slic(big, n_segments=n, compactness=COMPACTNESS, start_label=0, channel_axis=-1) for n in SCALES]
    plain = time.perf_counter() - t0
    print(f"plain full-resolution SLIC (3 scales): {plain:.2f} s — {plain / ours:.1f}× the time; ASA "
          + ", ".join(f"{asa(f, big_gt):.4f}" for f in fields))


if __name__ == "__main__":
    main()
