"""Train the offline demo's model: DeepLab v3+ (MobileNetV2) on generated scenes, CPU, minutes.

    python models/train_demo_model.py [--minutes 10] [--out deeplab_studio/models/demo_deeplabv3plus_mobilenet.safetensors]

Data: `core.scenes.generate_scene` at the demo's size (240×320: textured disks, squares and
triangles on textured backgrounds), seeds (1, i) for training and validation — the demo project
uses seed 2024, so its images are unseen. Training: `ml.training.train` (random scale 0.6–1.2, 80 px
crops, flip, colour jitter, poly schedule, random init: no network here), depthwise-separable
ASPP/decoder to keep the file small, AdamW (faster than SGD from scratch); the best epoch by validation mIoU is kept. Then the weights
are stored as float16 safetensors, the model is measured on the 12 demo scenes (mIoU against their
ground truth, through the same Predictor the app uses, with and without the CRF), and the model card
`demo_deeplabv3plus_mobilenet.json` is written with those figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: the package's bundled-model folder in this source tree (shipped as package data; commit the result)
OUT_DIR = HERE.parent / "deeplab_studio" / "models"
NAME = "demo_deeplabv3plus_mobilenet"
ARCH = "deeplabv3plus_mobilenet"


def make_data(count: int, seed: int):
    from deeplab_studio.core.scenes import SCENE_CLASSES, SCENE_COLORS, generate_scene
    from deeplab_studio.gui.demo import DEMO_SIZE
    from deeplab_studio.ml.datasets import from_arrays

    scenes = [generate_scene(*DEMO_SIZE, seed=(seed, i)) for i in range(count)]
    return from_arrays([s[0] for s in scenes], [s[1] for s in scenes], SCENE_CLASSES, val_fraction=0.04,
                       seed=seed, class_colors=SCENE_COLORS, source=f"generated scenes {DEMO_SIZE[1]}x{DEMO_SIZE[0]}")


def measure_on_demo_scenes(path: Path) -> dict:
    """mIoU of the saved model on the demo project's scenes (ground truth from the generator)."""
    from deeplab_studio.core.metrics import ConfusionMatrix
    from deeplab_studio.core.scenes import SCENE_CLASSES, generate_scene
    from deeplab_studio.gui.demo import DEMO_IMAGES, DEMO_SEED, DEMO_SIZE
    from deeplab_studio.ml.checkpoints import load_checkpoint
    from deeplab_studio.ml.predictor import Predictor

    import torch

    from deeplab_studio.ml.crf import refine

    predictor = Predictor(load_checkpoint(path), device="cpu")
    predictor.predict(generate_scene(*DEMO_SIZE, seed=0)[0])  # warm-up, not timed
    cm, cm_crf = ConfusionMatrix(len(SCENE_CLASSES)), ConfusionMatrix(len(SCENE_CLASSES))
    seconds = crf_seconds = 0.0
    for i in range(DEMO_IMAGES):
        image, truth = generate_scene(*DEMO_SIZE, seed=(DEMO_SEED, i))
        t0 = time.perf_counter()
        pred = predictor.predict(image)
        t1 = time.perf_counter()
        refined = refine(image, pred.probs)  # the app's "refine proposals with CRF" (default settings)
        seconds, crf_seconds = seconds + t1 - t0, crf_seconds + time.perf_counter() - t1
        cm.update(truth, pred.labels)
        cm_crf.update(truth, refined)
    iou = [None if np.isnan(v) else round(float(v), 4) for v in cm.iou()]
    chance = ConfusionMatrix(len(SCENE_CLASSES))  # "everything is background" for comparison
    for i in range(DEMO_IMAGES):
        _, truth = generate_scene(*DEMO_SIZE, seed=(DEMO_SEED, i))
        chance.update(truth, np.zeros_like(truth))
    return {"miou": round(float(cm.miou()), 4), "iou": dict(zip(SCENE_CLASSES, iou)),
            "pixel_accuracy": round(float(cm.pixel_accuracy()), 4),
            "all_background_miou": round(float(chance.miou()), 4),
            "miou_with_crf": round(float(cm_crf.miou()), 4),
            "images": DEMO_IMAGES, "seconds_per_image_cpu": round(seconds / DEMO_IMAGES, 3),
            "crf_seconds_per_image_cpu": round(crf_seconds / DEMO_IMAGES, 3), "torch_threads": torch.get_num_threads()}


def to_float16(src: Path, dst: Path) -> None:
    """Re-save a checkpoint with float16 weights (half the size; loads into a float32 model)."""
    import torch

    from deeplab_studio.ml.checkpoints import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(src)
    model = loaded.model.to(torch.float16)
    save_checkpoint(dst, model, arch=loaded.arch, num_classes=loaded.num_classes, class_names=loaded.class_names,
                    class_colors=loaded.class_colors, output_stride=loaded.output_stride, mean=loaded.mean,
                    std=loaded.std, training=loaded.meta.get("training"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT_DIR / f"{NAME}.safetensors")
    p.add_argument("--scenes", type=int, default=300)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=80)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--minutes", type=float, default=10.0, help="stop (keeping the best epoch) after this long")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--measure-only", action="store_true",
                   help="only re-measure the existing --out model and update its card's evaluation")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.measure_only:
        card_path = args.out.with_suffix(".json")
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card["evaluation"] = {"data": card["evaluation"]["data"], **measure_on_demo_scenes(args.out)}
        card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(card["evaluation"], indent=2))
        return 0

    from deeplab_studio.ml.training import TrainConfig, train

    data = make_data(args.scenes, seed=1)
    config = TrainConfig(arch=ARCH, epochs=args.epochs, batch_size=args.batch_size, crop=args.crop, lr=args.lr,
                         optimizer=args.optimizer, device="cpu", num_workers=0, seed=1, init="random",
                         separable=True, scale=(0.6, 1.2), log_every=10)
    deadline = time.monotonic() + args.minutes * 60

    def progress(ev) -> None:
        if ev.kind == "step":
            print(f"step {ev.step}/{ev.total_steps} epoch {ev.epoch} loss {ev.loss:.3f} lr {ev.lr:.4f} "
                  f"{ev.images_per_s or 0:.1f} img/s ETA {ev.eta_s or 0:.0f}s", file=sys.stderr, flush=True)
        elif ev.kind in ("epoch", "message", "done"):
            print(f"[{ev.kind}] epoch {ev.epoch} val mIoU {ev.val_miou} best {ev.best_miou} {ev.message}",
                  file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "best.safetensors"
        result = train(config, data, full, progress=progress, cancel=lambda: time.monotonic() > deadline)
        if not result.saved:
            print("no epoch finished in time: raise --minutes", file=sys.stderr)
            return 1
        to_float16(full, args.out)
    measured = measure_on_demo_scenes(args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    card = {
        "name": "Demo: DeepLab v3+ MobileNetV2 on generated scenes",
        "arch": ARCH,
        "file": args.out.name,
        "sha256": digest,
        "size_bytes": args.out.stat().st_size,
        "classes": ["background", "disk", "square", "triangle"],
        "description": ("A small model for the offline demo only. Trained from random initialisation, on the CPU, "
                        f"for {result.seconds / 60:.1f} minutes on {len(data.train)} synthetic scenes "
                        "(textured disks, squares and triangles on textured backgrounds, deeplab_studio.core.scenes)"
                        " with models/train_demo_model.py. It knows nothing about real photographs."),
        "training": {"scenes": args.scenes, "train_images": len(data.train), "val_images": len(data.val),
                     "epochs_done": result.epochs_done, "steps": result.steps, "crop": args.crop,
                     "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
                     "best_val_miou": result.best_miou,
                     "separable_aspp_decoder": True, "weights_dtype": "float16", "device": "cpu",
                     "minutes": round(result.seconds / 60, 2)},
        "evaluation": {"data": "the 12 demo project scenes (seed 2024, unseen in training)", **measured},
        "source": "trained locally by models/train_demo_model.py (no external weights)",
        "licence": "MIT (same as DeepLab Studio); the training data is generated, no third-party images",
    }
    (args.out.with_suffix(".json")).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(card["evaluation"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
