"""GPU figures for issue 15 (item 8): inference fp32 vs bf16/fp16 autocast and channels_last,
a 12 MP image whole vs tiled vs ``tile_size="auto"``, training images/s with and without AMP.

    .venv/bin/python benchmarks/bench_gpu.py [--seconds 3] [--skip-train]

Without CUDA it says so and exits 0. Each figure is a rate over about ``--seconds`` of work after a
warm-up, in this process, one after the other; ratios are against fp32 in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from deeplab_studio.ml.checkpoints import load_checkpoint
from deeplab_studio.ml.predictor import Predictor
from deeplab_studio.ml.tile_budget import available_bytes, measure_cost_per_pixel
from deeplab_studio.ml.train_loop import normalizer, train_step
from deeplab_studio.ml.zoo import build_model
from deeplab_studio.models import VOC_MODEL, bundled_model_path
from deeplab_studio.storage.images import read_image

VOC_IMAGES = Path(__file__).resolve().parents[1] / "tests" / "data" / "voc_real" / "images"
CUDA = torch.device("cuda")


def rate(fn: Callable[[], object], items: int, seconds: float) -> tuple[float, float]:
    """(items per second, peak GiB allocated) of repeated ``fn()`` calls for about ``seconds``."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        torch.cuda.synchronize()
        if time.perf_counter() - t0 >= seconds:
            break
    return n * items / (time.perf_counter() - t0), torch.cuda.max_memory_allocated() / 2**30


def voc_model():
    with bundled_model_path(VOC_MODEL) as path:
        return load_checkpoint(path, device="cpu")


def inference(seconds: float) -> None:
    images = [read_image(p) for p in sorted(VOC_IMAGES.iterdir())]
    print(f"Predictor.predict on the {len(images)} real VOC images (bundled model, labels only):")
    base = None
    for amp in (None, "bf16", "fp16"):
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            continue
        p = Predictor(voc_model(), device="cuda", amp=amp, keep_probs=False)
        r, mem = rate(lambda: [p.predict(im) for im in images], len(images), seconds)
        base = base or r
        print(f"  {amp or 'fp32':5s} channels_last  {r:8.1f} images/s  ({r / base:.2f}x fp32)  peak {mem:.2f} GiB")
    model = voc_model().model.to(CUDA).eval()
    x = torch.randn(8, 3, 513, 513, device=CUDA)
    print("plain model(x), batch 8 × 513²:")
    base = None
    for name, cl, dtype in (("fp32", False, None), ("fp32 channels_last", True, None),
                            ("bf16 channels_last", True, torch.bfloat16), ("fp16 channels_last", True, torch.float16)):
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            continue
        fmt = torch.channels_last if cl else torch.contiguous_format
        model.to(memory_format=fmt)
        xi = x.contiguous(memory_format=fmt)

        def run() -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float16, enabled=dtype is not None):
                model(xi)

        r, mem = rate(run, 8, seconds)
        base = base or r
        print(f"  {name:20s} {r:8.1f} images/s  ({r / base:.2f}x)  peak {mem:.2f} GiB")


def large_image(seconds: float) -> None:
    photo = read_image(VOC_IMAGES / "2011_000025.jpg")
    image = np.asarray(Image.fromarray(photo).resize((4000, 3000), Image.BILINEAR))
    model = voc_model().model.to(CUDA).eval()
    fp32 = measure_cost_per_pixel(model, CUDA)
    bf16 = measure_cost_per_pixel(model.to(memory_format=torch.channels_last), CUDA, amp_dtype=torch.bfloat16,
                                  channels_last=True)
    free = available_bytes(CUDA) or 0
    print(f"tile budget: {fp32:.0f} B/px fp32, {bf16:.0f} B/px bf16 channels_last; {free / 2**30:.1f} GiB free")
    print("4000×3000 photo (labels only, amp auto):")
    base = None
    for name, tile in (("whole", 4000), ("1024 px tiles", 1024), ("tile_size='auto'", "auto")):
        p = Predictor(voc_model(), device="cuda", tile_size=tile, keep_probs=False)
        r, mem = rate(lambda: p.predict(image), 1, seconds)
        base = base or r
        print(f"  {name:17s} {1 / r:7.3f} s/image  ({base / r:.2f}x whole)  peak {mem:.2f} GiB  tile {p.tile_size}")


def training(seconds: float) -> None:
    print("training steps (train_step, batch 8, 513² crops, SGD):")
    for arch in ("deeplabv3plus_mobilenet", "deeplabv3plus_resnet50"):
        torch.manual_seed(0)
        model = build_model(arch, num_classes=21).to(CUDA).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        images = torch.randint(0, 256, (8, 3, 513, 513), dtype=torch.uint8)
        labels = torch.randint(0, 21, (8, 513, 513), dtype=torch.uint8).to(CUDA)
        norm = normalizer(CUDA)
        torch.backends.cudnn.benchmark = True
        base = None
        for amp in (False, True):
            scaler = torch.amp.GradScaler("cuda", enabled=amp)
            r, mem = rate(lambda: train_step(model, optimizer, scaler, norm(images), labels, amp=amp), 8, seconds)
            base = base or r
            print(f"  {arch:24s} {'AMP fp16' if amp else 'fp32':8s} {r:7.1f} images/s  ({r / base:.2f}x)  "
                  f"peak {mem:.2f} GiB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure (default 3)")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"bench_gpu: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}): SKIPPED")
        return 0
    props = torch.cuda.get_device_properties(CUDA)
    print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} GPU(s); "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    inference(args.seconds)
    large_image(args.seconds)
    if not args.skip_train:
        training(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
