"""The window's CRF panel: a run of slider previews on one image, one-shot calls vs a lent session.

    .venv/bin/python benchmarks/bench_crf_previews.py [--repeat 3] [--steps 5]

For each tests/data/voc_real image, its ground truth (void as background) stands for the label map
on screen, and `--steps` previews move the appearance weight (`bilateral_compat` 3, 4, ...) as a
user dragging the slider would. Baseline: `ml.crf.refine_labels` per preview (what the window did
before); ours: `SessionLender.lend(image)` per preview (what Snap to edges and the panel do now:
the image's kernels are kept between calls). Both answers are checked equal; prints best-of-repeat
seconds per image and the ratio.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from deeplab_studio.ml.crf import CRFParams, SessionLender, refine_labels

from _common import best_of, voc_scenes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    total_plain = total_ours = 0.0
    print(f"{'image':14} {'one-shot s':>10} {'lent s':>8} {'ratio':>6}")
    for key, image, gt in voc_scenes():
        labels = np.where(gt == 255, 0, gt).astype(np.uint8)
        steps = [replace(CRFParams(), bilateral_compat=3.0 + i) for i in range(args.steps)]

        def plain() -> list[np.ndarray]:
            return [refine_labels(image, labels, params=p) for p in steps]

        def lent() -> list[np.ndarray]:
            lender, out = SessionLender(), []  # a new lender per run: the first preview builds the kernels
            for p in steps:
                with lender.lend(image) as session:
                    out.append(session.refine_labels(labels, params=p))
            return out

        t_plain, a = best_of(plain, args.repeat)
        t_ours, b = best_of(lent, args.repeat)
        assert all((x == y).all() for x, y in zip(a, b)), key
        total_plain, total_ours = total_plain + t_plain, total_ours + t_ours
        print(f"{key:14} {t_plain:10.2f} {t_ours:8.2f} {t_plain / t_ours:5.1f}x")
    print(f"{'all':14} {total_plain:10.2f} {total_ours:8.2f} {total_plain / total_ours:5.1f}x "
          f"({args.steps} previews per image, best of {args.repeat})")


if __name__ == "__main__":
    main()
