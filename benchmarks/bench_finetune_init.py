"""Fine-tuning from the bundled VOC model against random initialisation, same steps, real images.

Every run trains the same architecture (`deeplabv3_mobilenetv2_tf`, TF DeepLab's mobile v3) on
the 21 Pascal VOC classes with `ml.training.train`, with the same seed, data, crops, poly schedule
and number of SGD steps on the CPU; `init` is
  - `deeplabv3_mobilenetv2_voc`: the bundled model (backbone at 0.1× the learning rate, batch
    norm folded into its weights and so kept frozen, as `train` does for it), or
  - `random`: from scratch (batch norm trains; backbone at the full learning rate),
each at two learning rates: --finetune-lr (0.001, `train`'s default from a model) and --lr (0.01,
its default from scratch). Ratios: VOC / random at each learning rate (same settings), and with
`train`'s default rate for each.

Data (tests/data/voc_real, real VOC 2012 photographs with the official labels):
  train — the 3 VOC train images at full size (2011_000003 person/bottle, 2011_000006
          person/chair/sofa, 2011_000025 bus/car) + 3 val crops (2007_000033 aeroplane,
          2007_000676 sheep, 2009_001314 bird);
  eval  — the 4 other val crops (2007_000332 horse, 2008_007814 sheep, 2009_005189 aeroplane,
          2010_001069 bird), 513×513, never trained on; horse is in no training image.
The eval mIoU is `evaluate`'s: one confusion matrix over the 4 images, mean IoU over the classes
that occur in the ground truth or the predictions, 255 ignored. No model selection on the eval
images: the model after the last step is scored. The bundled model is also scored before any step.
(TF DeepLab's VOC models are trained on VOC train/trainaug, so it may have seen the three train
images; the val crops are VOC val.) Seconds are wall time: on a busy shared machine --threads 1
is steadier.

Usage: python benchmarks/bench_finetune_init.py [--steps 60] [--batch-size 4] [--crop 225] [--lr 0.01]
    [--finetune-lr 0.001] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deeplab_studio.core.labels import VOC_CLASSES, voc_colormap
from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.ml.checkpoints import load_checkpoint
from deeplab_studio.ml.datasets import Sample, TrainData
from deeplab_studio.ml.predictor import Predictor
from deeplab_studio.ml.training import TrainConfig, train
from deeplab_studio.models import VOC_MODEL, bundled_model_path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "voc_real"
TRAIN_IDS = ("2011_000003", "2011_000006", "2011_000025", "2007_000033", "2007_000676", "2009_001314")
EVAL_IDS = ("2007_000332", "2008_007814", "2009_005189", "2010_001069")
ARCH = "deeplabv3_mobilenetv2_tf"


def read_pair(image_id: str) -> tuple[np.ndarray, np.ndarray]:
    image = next(p for p in (DATA / "images").glob(f"{image_id}.*"))
    with Image.open(image) as im, Image.open(DATA / "masks" / f"{image_id}.png") as m:
        return np.asarray(im.convert("RGB")), np.asarray(m)


def train_data(steps: int, batch_size: int) -> TrainData:
    """The training images, repeated so that one epoch is `steps` steps (one save at the end)."""
    pairs = [read_pair(i) for i in TRAIN_IDS]
    copies = math.ceil(steps * batch_size / len(pairs))
    samples = [Sample(img, lab, f"{TRAIN_IDS[k]}#{c}") for c in range(copies) for k, (img, lab) in enumerate(pairs)]
    samples = samples[: steps * batch_size]
    colors = [tuple(int(v) for v in c) for c in voc_colormap(len(VOC_CLASSES))]
    return TrainData(samples, [], list(VOC_CLASSES), colors, f"voc_real train ({len(TRAIN_IDS)} images)")


def score(loaded, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, dict[str, float]]:
    """mIoU and per-class IoU (classes that occur) of a loaded model over the eval images."""
    predictor = Predictor(loaded, device="cpu")
    cm = ConfusionMatrix(len(VOC_CLASSES))
    for image, gt in pairs:
        cm.update(gt, predictor.predict(image).labels)
    iou = cm.iou()
    return float(cm.miou()), {VOC_CLASSES[k]: float(v) for k, v in enumerate(iou) if not math.isnan(v)}


def run(init: str, lr: float, data: TrainData, args, folder: Path) -> tuple[Path, float, float]:
    """Train from `init`; (checkpoint, seconds, mean loss over the last 10 % of the steps)."""
    config = TrainConfig(arch=ARCH, init=init, epochs=1, batch_size=args.batch_size, crop=args.crop, lr=lr,
                         device="cpu", num_workers=0, cpu_threads=args.threads, seed=args.seed, val_fraction=0.0,
                         log_every=max(1, args.steps // 10))
    out = folder / f"{init}-{lr:g}.safetensors"
    losses: list[float] = []
    t0 = time.perf_counter()
    train(config, data, out, progress=lambda p: losses.append(p.loss) if p.kind == "step" else None)
    return out, time.perf_counter() - t0, losses[-1] if losses else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--crop", type=int, default=225)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--finetune-lr", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steady on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    eval_pairs = [read_pair(i) for i in EVAL_IDS]
    data = train_data(args.steps, args.batch_size)
    print(f"{ARCH}, 21 VOC classes, CPU ({args.threads} threads): {args.steps} SGD steps, batch {args.batch_size}, "
          f"crop {args.crop}, seed {args.seed}")
    print(f"train: {', '.join(TRAIN_IDS)}\neval:  {', '.join(EVAL_IDS)} (513×513, never trained on)\n")

    with bundled_model_path(VOC_MODEL) as path:
        before_voc, _ = score(load_checkpoint(path), eval_pairs)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for init, lr in ((VOC_MODEL, args.finetune_lr), ("random", args.finetune_lr), (VOC_MODEL, args.lr),
                         ("random", args.lr)):
            out, seconds, loss = run(init, lr, data, args, Path(tmp))
            miou, per_class = score(load_checkpoint(out), eval_pairs)
            results[(init, lr)] = (miou, per_class, seconds, loss)
    print(f"step 0: bundled model mIoU {before_voc:.3f} (its own 21-class head, before any step)\n")
    print(f"{'init':<28}{'lr':>7}{'val mIoU':>9}{'last loss':>11}{'seconds':>9}   per-class IoU")
    for (init, lr), (miou, per_class, seconds, loss) in results.items():
        classes = ", ".join(f"{k} {v:.2f}" for k, v in per_class.items())
        print(f"{init:<28}{lr:>7g}{miou:>9.3f}{loss:>11.3f}{seconds:>9.0f}   {classes}")
    miou = {key: r[0] for key, r in results.items()}
    print(f"\nval mIoU after {args.steps} steps, from {VOC_MODEL} / from random:")
    for lr in (args.finetune_lr, args.lr):
        print(f"  same lr {lr:g}: {ratio(miou[(VOC_MODEL, lr)], miou[('random', lr)])}")
    print(f"  train's defaults (lr {args.finetune_lr:g} from the model, {args.lr:g} from scratch): "
          f"{ratio(miou[(VOC_MODEL, args.finetune_lr)], miou[('random', args.lr)])}")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}× ({a:.3f} vs {b:.3f})" if b > 0 else f"inf ({a:.3f} vs 0)"


if __name__ == "__main__":
    main()
