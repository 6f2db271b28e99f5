"""The CRF on every real scene of tests/data/voc_real: our engine vs plain pydensecrf, in one run.

    .venv/bin/python benchmarks/bench_crf_scenes.py [--repeat 3] [--only ID] [--torch]

Per scene and proposal, all in this process, best wall time of `--repeat` runs (interleaved):

- plain: one pydensecrf DenseCRF2D call over the whole image with all 21 labels and the same
  energy and kernels, 10 iterations (what a user of pydensecrf writes);
- old: the previous engine (pydensecrf on each tile's band with the tile's labels), kept as
  `crf_engine.refine_free_pixels(..., reference=True)`;
- ours: `ml.crf.refine` / `refine_labels` (a fresh call: the lattice is built);
- warm: the same call again through a `CRFSession` that has seen it once (a repeated snap or a
  slider preview: the kept kernels are reused);
- torch (`--torch`): `crf_torch.refine_torch` on CUDA when there is one, else the CPU.

mIoU (percent, void ignored) of each against the official masks; ratio = plain time / ours.
Proposals: `r101` the DeepLab v3+ R101 predictions (7 val crops) as hard labels with the module
defaults; `card` the bundled MobileNetV2 model's labels with its model card's CRF setting (what
the window's Ctrl+R does); `probs` its softmax with the defaults (what a model without a card gets).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from deeplab_studio.core.labels import IGNORE
from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.ml import crf_engine
from deeplab_studio.ml.crf import CRFParams, CRFSession, model_crf, refine, refine_labels
from deeplab_studio.ml.crf_inputs import check_probs
from deeplab_studio.ml.crf_reference import plain_crf

from _common import NUM_CLASSES, VOC, colours_to_indices, voc_scenes


def miou(gt: np.ndarray, labels: np.ndarray) -> float:
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(gt, labels)
    return 100 * cm.miou()


def hard_energy(labels: np.ndarray, params: CRFParams) -> np.ndarray:
    """The energy refine_labels minimises, written out for all 21 labels over the whole image."""
    none = np.zeros(labels.shape, bool)
    return crf_engine.unary_energy(labels, none, labels == IGNORE, None, list(range(NUM_CLASSES)), params)


def cases(with_model: bool) -> list[tuple[str, str, np.ndarray, np.ndarray, dict]]:
    """(scene id, proposal kind, image, ground truth, the proposal's arguments)."""
    out = []
    preds = {}
    if with_model:
        from deeplab_studio.ml.checkpoints import load_checkpoint
        from deeplab_studio.ml.predictor import Predictor
        from deeplab_studio.models import VOC_MODEL, bundled_model_path

        with bundled_model_path(VOC_MODEL) as path:
            predictor = Predictor(load_checkpoint(path), device="cpu")
        card = model_crf(VOC_MODEL).params
    for stem, image, gt in voc_scenes():
        r101 = VOC / "vainf_r101_pred" / f"{stem}.png"
        if r101.exists():
            labels = colours_to_indices(np.asarray(Image.open(r101).convert("RGB")))
            out.append((stem, "r101", image, gt, {"labels": labels, "params": CRFParams()}))
        if with_model:
            preds[stem] = pred = predictor.predict(image)
            out.append((stem, "card", image, gt, {"labels": pred.labels, "params": card}))
            out.append((stem, "probs", image, gt, {"probs": pred.probs.astype(np.float32), "params": CRFParams()}))
    return out


def runners(image: np.ndarray, args: dict, with_torch: bool) -> dict:
    """name -> callable returning labels, for one case."""
    params = args["params"]
    none = np.zeros(image.shape[:2], bool)
    if "probs" in args:
        probs = args["probs"]
        _, current, top = check_probs(probs, image.shape[:2])
        energy = -np.log(np.clip(probs, 1e-5, 1.0)).astype(np.float32)
        run = {"plain": lambda: plain_crf(image, energy, params),
               "old": lambda: crf_engine.refine_free_pixels(image, current, none, probs, params, top=top, reference=True),
               "ours": lambda: refine(image, probs, params=params)}
        session = CRFSession(image)
        session.refine(probs, params=params)
        run["warm"] = lambda: session.refine(probs, params=params)
    else:
        labels = args["labels"]
        energy = hard_energy(labels, params)
        run = {"plain": lambda: plain_crf(image, energy, params),
               "old": lambda: crf_engine.refine_free_pixels(image, labels, none, None, params, reference=True),
               "ours": lambda: refine_labels(image, labels, params=params)}
        session = CRFSession(image)
        session.refine_labels(labels, params=params)
        run["warm"] = lambda: session.refine_labels(labels, params=params)
    if with_torch:
        from deeplab_studio.ml.crf_torch import refine_torch

        run["torch"] = lambda: refine_torch(image, args.get("probs"), labels=args.get("labels"), params=params)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timing runs per measurement (best is kept)")
    ap.add_argument("--only", default="", help="scene ids containing this text")
    ap.add_argument("--no-model", action="store_true", help="only the R101 predictions (no model run)")
    ap.add_argument("--torch", action="store_true", help="also the torch mean-field (crf_torch)")
    args = ap.parse_args()
    rows = []
    names = ["plain", "old", "ours", "warm"] + (["torch"] if args.torch else [])
    print(f"{'scene':12s} {'input':6s} " + " ".join(f"{n:>14s}" for n in names) + "   ours/plain warm/plain  (s, mIoU)")
    for scene, kind, image, gt, case in cases(not args.no_model):
        if args.only not in scene:
            continue
        run = runners(image, case, args.torch)
        best = {n: float("inf") for n in run}
        out = {}
        for _ in range(args.repeat):
            for n, fn in run.items():
                t = time.perf_counter()
                out[n] = fn()
                best[n] = min(best[n], time.perf_counter() - t)
        scores = {n: miou(gt, out[n]) for n in run}
        rows.append((kind, best, scores))
        cells = " ".join(f"{best[n]:6.3f} {scores[n]:6.2f}" for n in names)
        print(f"{scene:12s} {kind:6s} {cells}   {best['plain'] / best['ours']:6.1f}x {best['plain'] / best['warm']:6.1f}x",
              flush=True)
    print("\nper input: ratio plain/ours min / median (warm: min / median); mIoU ours - plain mean (worst), ours - old")
    for kind in ("r101", "card", "probs"):
        sel = [r for r in rows if r[0] == kind]
        if not sel:
            continue
        cold = np.array([b["plain"] / b["ours"] for _, b, _ in sel])
        warm = np.array([b["plain"] / b["warm"] for _, b, _ in sel])
        d = np.array([s["ours"] - s["plain"] for _, _, s in sel])
        do = np.array([s["ours"] - s["old"] for _, _, s in sel])
        print(f"   {kind:6s} {cold.min():5.1f}x / {np.median(cold):5.1f}x   warm {warm.min():5.1f}x / "
              f"{np.median(warm):5.1f}x   {d.mean():+.3f} ({d.min():+.3f})   {do.mean():+.3f} ({do.min():+.3f})")


if __name__ == "__main__":
    main()
