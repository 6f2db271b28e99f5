"""Click to correct the model: CPU latency per click and what the clicks do, on real images.

For each image of tests/data/voc_real with the bundled VOC model (DeepLab v3 MobileNetV2, TF layout),
in one process on the CPU:

  1. the baseline: one plain forward pass (`Predictor.predict`, no TTA, no CRF);
  2. the first click: `ClickCorrector.set_image` (backbone + ASPP once) plus `correct` with one click;
  3. later clicks: `correct` with 2..N clicks, the features cached.

The clicks are a scripted user's: each goes to the most interior pixel of the largest connected
error region against the official mask, with the true class there (the rule of `simulate`). The
mIoU (over the classes of the mask, void ignored) is printed after each click. A second part does
the same latency measurement for DeepLab v3+ (the bundled demo model, `deeplabv3plus_mobilenet`)
on generated scenes.

Usage: python benchmarks/bench_click_correct.py [--clicks 5] [--threads N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np
import torch
from scipy import ndimage

from deeplab_studio.core.scenes import generate_scene
from deeplab_studio.ml.checkpoints import load_checkpoint
from deeplab_studio.ml.click_correct import ClickCorrector
from deeplab_studio.ml.predictor import Predictor
from deeplab_studio.models import SCENES_MODEL, VOC_MODEL, bundled_model_path

from _common import best_of, voc_scenes


def miou(gt: np.ndarray, labels: np.ndarray) -> float:
    valid = gt != 255
    out = []
    for c in np.unique(gt[valid]):
        union = ((gt == c) | (labels == c)) & valid
        out.append(((gt == c) & (labels == c) & valid).sum() / union.sum())
    return float(np.mean(out))


def next_click(gt: np.ndarray, labels: np.ndarray) -> tuple[int, int, int] | None:
    """The most interior pixel of the largest connected error region, with its true class."""
    wrong = (gt != 255) & (labels != gt)
    lab, n = ndimage.label(wrong)
    if n == 0:
        return None
    region = lab == 1 + int(np.argmax(ndimage.sum(wrong, lab, range(1, n + 1))))
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(x), int(y), int(gt[y, x])


def run_image(corrector: ClickCorrector, predictor: Predictor, rgb: np.ndarray, gt: np.ndarray | None,
              clicks: int, repeat: int) -> dict:
    zeros, no_edit = np.zeros(rgb.shape[:2], np.uint8), np.zeros(rgb.shape[:2], bool)
    forward, pred = best_of(lambda: predictor.predict(rgb), repeat)
    features, _ = best_of(lambda: corrector.set_image(rgb), repeat)
    labels = pred.labels
    row = {"forward": forward, "features": features, "clicks": [], "miou": [miou(gt, labels)] if gt is not None else []}
    made: list[tuple[int, int, int]] = []
    rng = np.random.default_rng(0)
    for _ in range(clicks):
        click = next_click(gt, labels) if gt is not None else (int(rng.integers(rgb.shape[1])),
                                                                 int(rng.integers(rgb.shape[0])), 1)
        if click is None:
            break
        made.append(click)
        seconds, labels = best_of(lambda: corrector.correct(made, zeros, no_edit), repeat)
        row["clicks"].append((seconds, corrector.stats.steps))
        if gt is not None:
            row["miou"].append(miou(gt, labels))
    return row


def report(name: str, rows: dict[str, dict]) -> None:
    print(f"\n== {name}")
    print(f"{'image':14} {'forward s':>9} {'features s':>10} {'1st click s':>11} {'later s':>8} {'steps':>6}  mIoU after 0..n clicks")
    firsts, laters, forwards = [], [], []
    for key, r in rows.items():
        if not r["clicks"]:
            continue
        first = r["features"] + r["clicks"][0][0]
        later = statistics.median(s for s, _ in r["clicks"][1:]) if len(r["clicks"]) > 1 else float("nan")
        steps = statistics.median(k for _, k in r["clicks"])
        firsts.append(first / r["forward"])
        forwards.append(r["forward"])
        if len(r["clicks"]) > 1:
            laters.append(later / r["forward"])
        curve = " ".join(f"{v * 100:.1f}" for v in r["miou"])
        print(f"{key:14} {r['forward']:9.3f} {r['features']:10.3f} {first:11.3f} {later:8.3f} {steps:6.0f}  {curve}")
    if not forwards:
        return
    later_ratio = f"{statistics.median(laters):.2f}x a forward" if laters else "n/a (one click per image)"
    print(f"median forward {statistics.median(forwards):.3f} s; first click (features + click) "
          f"{statistics.median(firsts):.2f}x a forward; a later click {later_ratio}")
    curves = [r["miou"] for r in rows.values() if r["miou"]]
    if curves:
        n = min(len(c) for c in curves)
        means = np.mean([c[:n] for c in curves], axis=0) * 100
        print("mean mIoU after 0..n clicks: " + " ".join(f"{v:.1f}" for v in means))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="torch threads (default: the inference worker's rule, every core but one)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest is kept")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} torch thread(s), fastest of {args.repeat} runs")
    with bundled_model_path(VOC_MODEL) as path:
        loaded = load_checkpoint(path)
    predictor, corrector = Predictor(loaded, device="cpu"), ClickCorrector(loaded)
    rows = {}
    for stem, rgb, gt in voc_scenes():
        rows[stem] = run_image(corrector, predictor, rgb, gt, args.clicks, args.repeat)
    report(f"{VOC_MODEL} ({loaded.arch}) on tests/data/voc_real", rows)

    with bundled_model_path(SCENES_MODEL) as path:
        loaded = load_checkpoint(path)
    predictor, corrector = Predictor(loaded, device="cpu"), ClickCorrector(loaded)
    rows = {}
    for seed in range(3):
        rgb, gt = generate_scene(513, 513, seed=seed)
        rows[f"scene {seed}"] = run_image(corrector, predictor, rgb, gt, args.clicks, args.repeat)
    report(f"{SCENES_MODEL} ({loaded.arch}) on generated 513x513 scenes", rows)


if __name__ == "__main__":
    main()
