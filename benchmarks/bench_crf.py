"""Dense CRF: `refine` against a plain pydensecrf call, settings table, memory on a large image.

    .venv/bin/python benchmarks/bench_crf.py [--repeat 3] [--skip-large] [--large-plain]

1. Real samples (tests/data/voc_samples, DeepLab v3+ R101 predictions): mIoU (background +
   object, void ignored) of the prediction, of `refine_labels` with the defaults and of a plain
   pydensecrf call (all 21 labels, whole image, 10 iterations, same energy and kernels), with the
   time of each and the speed ratio, all in this process.
2. Settings table: how each setting, changed alone from the defaults (and DeepLab's published
   settings), moves mIoU on the predictions, on the ground truth itself (a perfect proposal) and
   on synthetic coarse softmax proposals (ground truth down-sampled 8×/16×/32×, up-sampled).
3. A 4000×3000 image (sample 1 scaled up) refined in a fresh process, from hard labels and from
   21-class float16 probabilities: time, peak RSS
   (VmHWM, reset before the call) and peak numpy allocation (tracemalloc); `--large-plain` adds the plain
   whole-image call with only the 2 labels present (minutes, ~3 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_studio.core.labels import IGNORE, voc_colormap
from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.ml import crf
from deeplab_studio.ml.crf import DEEPLAB_V2_PARAMS, CRFParams, refine, refine_labels

from _common import best_of

SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "data" / "voc_samples"
IDS = (1, 23, 114)
NUM_CLASSES = 21


def colours_to_indices(rgb: np.ndarray) -> np.ndarray:
    cmap = voc_colormap(256).astype(np.int64)
    keys = (cmap[:, 0] << 16) | (cmap[:, 1] << 8) | cmap[:, 2]
    lut = {int(k): i for i, k in reversed(list(enumerate(keys)))}
    lut[int(keys[IGNORE])] = IGNORE
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    uniq, inv = np.unique(packed, return_inverse=True)
    return np.array([lut[int(k)] for k in uniq], dtype=np.uint8)[inv].reshape(packed.shape)


def load_sample(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image RGB, prediction indices, ground truth indices with 255 = void)."""
    def rgb(kind: str) -> np.ndarray:
        return np.asarray(Image.open(SAMPLES / f"{n}_{kind}.png").convert("RGB"))
    return rgb("image"), colours_to_indices(rgb("pred")), colours_to_indices(rgb("target"))


def miou(gt: np.ndarray, pred: np.ndarray) -> float:
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(gt, pred)
    return cm.miou()


def coarse_softmax(gt: np.ndarray, factor: int) -> np.ndarray:
    """21×H×W probabilities: one-hot ground truth box-averaged `factor`× down (void left out), bilinear up."""
    h, w = gt.shape
    small = (max(w // factor, 1), max(h // factor, 1))
    valid = np.asarray(Image.fromarray((gt != IGNORE).astype(np.float32), "F").resize(small, Image.BOX))
    probs = np.zeros((NUM_CLASSES, h, w), np.float32)
    for c in np.unique(gt[gt != IGNORE]):
        frac = np.asarray(Image.fromarray((gt == c).astype(np.float32), "F").resize(small, Image.BOX))
        frac = np.where(valid > 0, frac / np.maximum(valid, 1e-6), 1.0 / NUM_CLASSES).astype(np.float32)
        probs[c] = np.asarray(Image.fromarray(frac, "F").resize((w, h), Image.BILINEAR))
    probs /= np.maximum(probs.sum(axis=0, keepdims=True), 1e-6)
    return probs


def plain_crf(image: np.ndarray, unary: np.ndarray, params: CRFParams, iterations: int = 10) -> np.ndarray:
    """The baseline: one pydensecrf call over the whole image with every label of `unary`."""
    import pydensecrf.densecrf as dcrf

    n, h, w = unary.shape
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(n, -1)))
    d.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    d.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                           rgbim=np.array(image, order="C", copy=True), compat=params.bilateral_compat)
    q = np.asarray(d.inference(iterations)).reshape(n, h, w)
    return q.argmax(axis=0).astype(np.uint8)


def hard_energy_all_labels(labels: np.ndarray, params: CRFParams) -> np.ndarray:
    """The energy `refine_labels` minimises, written out for all 21 labels over the whole image."""
    none = np.zeros(labels.shape, bool)
    return crf._unary(labels, none, labels == IGNORE, None, list(range(NUM_CLASSES)), params)


def soft_energy_all_labels(probs: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(probs, 1e-5, 1.0)).astype(np.float32)


# --- 1. real samples: refine vs plain -----------------------------------------------------------
def bench_real(repeat: int) -> None:
    p = CRFParams()
    print("1. Real samples, hard predictions: refine_labels (defaults) vs plain pydensecrf "
          "(21 labels, whole image, 10 iterations, same energy)")
    print(f"   defaults: {p}")
    print(f"   {'sample':>6} {'pred':>7} {'refine':>7} {'plain':>7} {'t_refine':>9} {'t_plain':>8} {'ratio':>6} "
          f"{'plain(unary_from_labels)':>25}")
    rows = []
    for n in IDS:
        image, pred, gt = load_sample(n)
        t_r, r = best_of(lambda: refine_labels(image, pred), repeat)
        energy = hard_energy_all_labels(pred, p)
        t_p, b = best_of(lambda: plain_crf(image, energy, p), repeat)
        from pydensecrf.utils import unary_from_labels
        textbook = plain_crf(image, unary_from_labels(pred, NUM_CLASSES, gt_prob=p.hard_confidence,
                                                      zero_unsure=False).reshape((NUM_CLASSES,) + pred.shape), p)
        row = (miou(gt, pred), miou(gt, r), miou(gt, b), t_r, t_p, miou(gt, textbook))
        rows.append(row)
        print(f"   {n:>6} {row[0]*100:7.2f} {row[1]*100:7.2f} {row[2]*100:7.2f} {t_r:8.3f}s {t_p:7.3f}s "
              f"{t_p/t_r:5.1f}× {row[5]*100:25.2f}")
    m = np.mean(rows, axis=0)
    print(f"   {'mean':>6} {m[0]*100:7.2f} {m[1]*100:7.2f} {m[2]*100:7.2f} {m[3]:8.3f}s {m[4]:7.3f}s "
          f"{m[4]/m[3]:5.1f}× {m[5]*100:25.2f}")

    print("   soft input (ground truth ↓16 as a softmax): refine vs plain (unary_from_softmax, 21 labels)")
    for n in IDS:
        image, _, gt = load_sample(n)
        probs = coarse_softmax(gt, 16)
        t_r, r = best_of(lambda: refine(image, probs), repeat)
        t_p, b = best_of(lambda: plain_crf(image, soft_energy_all_labels(probs), CRFParams()), repeat)
        print(f"   {n:>6} {miou(gt, probs.argmax(0))*100:7.2f} {miou(gt, r)*100:7.2f} {miou(gt, b)*100:7.2f} "
              f"{t_r:8.3f}s {t_p:7.3f}s {t_p/t_r:5.1f}×")


# --- 2. settings table ----------------------------------------------------------------------------
def settings() -> dict[str, CRFParams]:
    d = CRFParams()
    return {
        "defaults": d,
        "iterations=5": replace(d, iterations=5),
        "no gaussian": replace(d, gaussian_compat=0),
        "gaussian sxy=3": replace(d, gaussian_sxy=3),
        "no bilateral": replace(d, bilateral_compat=0),
        "bilateral sxy=20": replace(d, bilateral_sxy=20),
        "bilateral sxy=80": replace(d, bilateral_sxy=80),
        "srgb=3": replace(d, bilateral_srgb=3),
        "srgb=13": replace(d, bilateral_srgb=13),
        "bilateral compat=2": replace(d, bilateral_compat=2),
        "bilateral compat=5": replace(d, bilateral_compat=5),
        "confidence=0.6": replace(d, hard_confidence=0.6),
        "confidence=0.9": replace(d, hard_confidence=0.9),
        "DeepLab v2 (4,121,5,3,3)": replace(DEEPLAB_V2_PARAMS, margin=d.margin, tile_size=d.tile_size),
        "DeepLab v2 R101 (4,67,3,3,1)": replace(d, iterations=10, bilateral_sxy=67, bilateral_srgb=3,
                                                bilateral_compat=4),
        "strong bilateral (10,80,13)": replace(d, iterations=10, gaussian_sxy=3, bilateral_sxy=80,
                                               bilateral_srgb=13, bilateral_compat=10),
        # the same, with hard labels allowed to travel 64 px instead of `margin` 16: uncapped damage
        "strong bilateral, margin=64": replace(d, iterations=10, gaussian_sxy=3, bilateral_sxy=80,
                                               bilateral_srgb=13, bilateral_compat=10, margin=64),
    }


def bench_settings() -> None:
    samples = [load_sample(n) for n in IDS]
    inputs = {
        "pred": [(pred, None) for _, pred, _ in samples],
        "GT": [(gt, None) for _, _, gt in samples],
        "GT↓8": [(None, coarse_softmax(gt, 8)) for _, _, gt in samples],
        "GT↓16": [(None, coarse_softmax(gt, 16)) for _, _, gt in samples],
        "GT↓32": [(None, coarse_softmax(gt, 32)) for _, _, gt in samples],
    }
    print("\n2. Settings: mIoU change in points (mean over the 3 samples; worst sample in brackets)")
    base = {}
    for name, items in inputs.items():
        base[name] = [miou(gt, lab if lab is not None else probs.argmax(0))
                      for (lab, probs), (_, _, gt) in zip(items, samples)]
    print(f"   {'setting':<30}" + "".join(f"{k:>16}" for k in inputs))
    print(f"   {'(input mIoU)':<30}" + "".join(f"{np.mean(v)*100:16.2f}" for v in base.values()))
    for sname, p in settings().items():
        cells = []
        for name, items in inputs.items():
            deltas = []
            for (lab, probs), (image, _, gt), b in zip(items, samples, base[name]):
                out = refine_labels(image, lab, params=p) if lab is not None else refine(image, probs, params=p)
                deltas.append((miou(gt, out) - b) * 100)
            cells.append(f"{np.mean(deltas):+8.2f} ({min(deltas):+5.2f})")
        print(f"   {sname:<30}" + "".join(f"{c:>16}" for c in cells), flush=True)


# --- 3. large image ---------------------------------------------------------------------------------
def current_rss_kb() -> int:
    """Resident memory now (Linux /proc), else the peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (resource.getpagesize() // 1024)
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ≥ 4.0), so the peak measured next is the call's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def large_child(mode: str) -> None:
    image, pred, gt = load_sample(1)
    size = (4000, 3000)
    big = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    labels = np.asarray(Image.fromarray(pred).resize(size, Image.NEAREST))
    probs = None
    if mode == "refine-soft":  # 21×3000×4000 float16, like `predict --save-probs` writes
        small = coarse_softmax(gt, 16)
        probs = np.empty((NUM_CLASSES, size[1], size[0]), np.float16)
        for c in range(NUM_CLASSES):
            probs[c] = np.asarray(Image.fromarray(small[c], "F").resize(size, Image.BILINEAR))
        del small
    del image, pred, gt
    rss0, peak0 = current_rss_kb(), peak_rss_kb()
    if reset_peak_rss():
        peak0 = 0
    tracemalloc.start()
    t = time.perf_counter()
    if mode == "refine":
        out = refine_labels(big, labels)
    elif mode == "refine-soft":
        out = refine(big, probs)
    else:  # the plain call with only the 2 labels present (21 would need ~10× more memory)
        present = [int(v) for v in np.unique(labels)]
        p = CRFParams()
        energy = crf._unary(labels, np.zeros(labels.shape, bool), labels == IGNORE, None, present, p)
        out = np.asarray(present, np.uint8)[plain_crf(big, energy, p)]
    dt = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    rss1 = peak_rss_kb()
    if probs is not None:
        labels = np.concatenate([probs[:, y:y + 256].argmax(axis=0) for y in range(0, size[1], 256)])
    print(json.dumps({"seconds": dt, "rss_before_mb": rss0 / 1024, "rss_peak_mb": rss1 / 1024,
                      "peak_set_by_call": rss1 > peak0, "numpy_peak_mb": peak / 2**20,
                      "changed": int((out != labels).sum())}))


def bench_large(with_plain: bool) -> None:
    print("\n3. 4000×3000 image (sample 1 scaled up), each in a fresh process")
    modes = ["refine", "refine-soft"] + (["plain"] if with_plain else [])
    for mode in modes:
        out = subprocess.run([sys.executable, __file__, "--large-child", mode], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"   {mode}: failed ({out.stderr.strip().splitlines()[-1:]})")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        label = {"refine": "refine_labels (hard labels)", "refine-soft": "refine (21×H×W float16 probs, 504 MB)",
                 "plain": "plain pydensecrf, 2 labels, whole image"}[mode]
        print(f"   {label:<42} {r['seconds']:7.2f}s  process peak RSS {r['rss_peak_mb']:6.0f} MB "
              f"({'reached in the call' if r['peak_set_by_call'] else 'reached before the call'}; "
              f"RSS {r['rss_before_mb']:.0f} MB before it)  "
              f"numpy peak in the call {r['numpy_peak_mb']:.0f} MB  changed px {r['changed']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timing runs per measurement (best is kept)")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-settings", action="store_true")
    ap.add_argument("--large-plain", action="store_true", help="also run the plain call on the large image")
    ap.add_argument("--large-child", choices=("refine", "refine-soft", "plain"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.large_child:
        large_child(args.large_child)
        return
    bench_real(args.repeat)
    if not args.skip_settings:
        bench_settings()
    if not args.skip_large:
        bench_large(args.large_plain)


if __name__ == "__main__":
    main()
