"""Training throughput on the CPU: the real data loader vs. a loop over pre-made tensors.

Measures, in one process, for DeepLab v3+ MobileNetV2 at crop 321 (SGD steps via the same
`train_step` that `ml.training.train` uses):
  1. images/s with the DataLoader (JPEG/PNG files of VOC size decoded and augmented by worker
     processes, as in training; fetching the batch is inside the timed step);
  2. images/s over pre-made batches already in memory (the plain baseline: no loading at all),
     a second identical model stepped in turn with (1), so both see the same machine load;
  3. images/s the loader alone can deliver (no model), with the same workers and with none.
Ratio 1/2 close to 1 means the loader keeps the model fed; (3) says how much headroom it has.

Usage: python benchmarks/bench_training.py [--steps 6] [--batch-size 4] [--crop 321] [--workers 2] [--threads N] [--control]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from deeplab_studio.core.scenes import SCENE_CLASSES, generate_scene
from deeplab_studio.ml.augment import AugmentParams
from deeplab_studio.ml.datasets import EpochSampler, Sample, SegmentationDataset
from deeplab_studio.ml.training import TrainConfig, make_optimizer, normalizer, train_step
from deeplab_studio.ml.zoo import build_model
from deeplab_studio.storage.images import read_image
from deeplab_studio.storage.labelmaps import read_label_png


def write_samples(folder: Path, count: int) -> list[Sample]:
    """VOC-sized scenes (500×375) as JPEG images and palette label PNGs."""
    samples = []
    for i in range(count):
        img, lab = generate_scene(375, 500, seed=(7, i))
        Image.fromarray(img).save(folder / f"{i}.jpg", quality=90)
        Image.fromarray(lab).save(folder / f"{i}.png")
        samples.append(Sample(folder / f"{i}.jpg", folder / f"{i}.png", str(i), read_image=read_image,
                              read_labels=read_label_png))
    return samples


def make_loader(samples: list[Sample], args, workers: int) -> DataLoader:
    sampler = EpochSampler(len(samples), seed=0, min_items=(args.steps + 1) * args.batch_size)
    ds = SegmentationDataset(samples, len(SCENE_CLASSES), AugmentParams(crop=args.crop))
    return DataLoader(ds, batch_size=args.batch_size, sampler=sampler, drop_last=True, num_workers=workers,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))


def fresh_model():
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_mobilenet", num_classes=len(SCENE_CLASSES)).train()
    optimizer = make_optimizer(model, TrainConfig(lr=0.01), pretrained=False)
    return model, optimizer, torch.amp.GradScaler("cpu", enabled=False)


def interleaved(loader, premade: list, args) -> dict[str, float]:
    """Two identical models trained side by side: A pulls its batch from ``loader`` inside the
    timed step, B takes pre-made tensors. Steps alternate A,B / B,A (so neither always goes
    first) and both see the same background load on a shared machine. Returns images/s from
    the median wall time per step, and the main process's CPU seconds per step, of each."""
    norm = normalizer(torch.device("cpu"))
    (ma, oa, sa), (mb, ob, sb) = fresh_model(), fresh_model()
    it = iter(loader)
    images, labels = next(it)  # warm-up, not timed (worker start-up, first-call allocations)
    train_step(ma, oa, sa, norm(images), labels)
    train_step(mb, ob, sb, norm(premade[0][0]), premade[0][1])
    wall = {"a": [], "b": []}
    cpu = {"a": [], "b": []}

    def step_a() -> None:
        images, labels = next(it)
        train_step(ma, oa, sa, norm(images), labels)

    for k, (images_b, labels_b) in enumerate(premade[1:]):
        def step_b(x=images_b, y=labels_b) -> None:
            train_step(mb, ob, sb, norm(x), y)

        for name, fn in ((("a", step_a), ("b", step_b)) if k % 2 == 0 else (("b", step_b), ("a", step_a))):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    bs = args.batch_size
    return {"loader": bs / float(np.median(wall["a"])), "premade": bs / float(np.median(wall["b"])),
            "loader_cpu": float(np.median(cpu["a"])), "premade_cpu": float(np.median(cpu["b"]))}


def loader_only(samples, args, workers: int) -> float:
    loader = make_loader(samples, args, workers)
    it = iter(loader)
    next(it)  # start-up (worker processes) not timed
    t0, n = time.perf_counter(), 0
    for images, _ in it:
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="timed steps per mode (default 6)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--crop", type=int, default=321)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--images", type=int, default=24, help="distinct images on disk (default 24)")
    p.add_argument("--control", action="store_true", help="also time pre-made vs pre-made (the noise floor)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (1 gives steadier figures on a shared, busy machine)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"deeplabv3plus_mobilenet, batch {args.batch_size}, crop {args.crop}, {args.steps} timed steps")
    with tempfile.TemporaryDirectory() as tmp:
        samples = write_samples(Path(tmp), args.images)

        feed_w = loader_only(samples, args, args.workers)
        feed_0 = loader_only(samples, args, 0)
        print(f"loader alone: {feed_w:7.1f} images/s ({args.workers} workers), {feed_0:.1f} images/s (in-process)")

        premade = list(make_loader(samples, args, 0))  # the same batches, made before timing
        r = interleaved(make_loader(samples, args, args.workers), premade, args)
        print(f"training with DataLoader:              {r['loader']:7.2f} images/s "
              f"(main process {r['loader_cpu']:.2f} CPU-s/step)")
        print(f"training, pre-made batches (baseline): {r['premade']:7.2f} images/s "
              f"(main process {r['premade_cpu']:.2f} CPU-s/step)")
        if args.control:
            c = interleaved(iter(premade), premade, args)
            print(f"control, pre-made vs pre-made: ratio {c['loader'] / c['premade']:.2f} (measurement noise)")

    print(f"ratio loader / pre-made: {r['loader'] / r['premade']:.2f}  (1.00 = the loader is not the bottleneck)")
    print(f"loader headroom: it supplies {feed_w / r['loader']:.0f}× what training consumes; one batch costs "
          f"{args.batch_size / feed_0:.2f} s in-process vs {args.batch_size / r['loader']:.2f} s per training step")


if __name__ == "__main__":
    main()
