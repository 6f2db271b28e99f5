"""Tile size from a memory budget: the memory per pixel of the networks, and a 12 MP image whole vs tiled.

    .venv/bin/python benchmarks/bench_tile_budget.py [--side-mp 12] [--measure] [--skip-12mp] [--device cpu]

1. The bundled model's peak activation memory per input pixel (``ml.tile_budget.measure_cost_per_pixel``:
   slope of the allocator's peak between two sizes; on the CPU torch's profiler, on CUDA its
   allocator statistics) and, on the CPU, the process's peak RSS growth per pixel between a
   1024² and a 2048² forward (/proc/self/clear_refs resets the peak). ``--measure``: every
   registered architecture at output stride 16 and 8, slope 512²→768² (``COST_PER_PIXEL``'s figures;
   smaller inputs under-state the ResNets: 276 B/px at 192²→320² against 388 at 512²→768²).
2. A 4000×3000 photo (a real VOC image upscaled) through the Predictor with labels and confidence
   only: whole (tile size 4000) vs 1024 px tiles — seconds, ratio, peak RSS growth, label agreement —
   and the tile size ``tile_size="auto"`` picks with the memory free now.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deeplab_studio.ml.checkpoints import load_checkpoint
from deeplab_studio.ml.predictor import Predictor
from deeplab_studio.ml.tile_budget import (
    COST_PER_PIXEL, TileBudget, available_bytes, input_bytes_per_pixel, measure_cost_per_pixel)
from deeplab_studio.ml.zoo import build_model, list_archs
from deeplab_studio.models import VOC_MODEL, bundled_model_path

PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "voc_real" / "images" / "2011_000025.jpg"


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_rss_growth(fn) -> tuple[int, float]:
    """(peak RSS over the RSS before, seconds) of ``fn()`` — Linux only."""
    before = _status("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    return _status("VmHWM:") - before, seconds


def cost_figures(model: torch.nn.Module, device: torch.device) -> None:
    cost = measure_cost_per_pixel(model, device, sides=(192, 320))
    print(f"bundled {VOC_MODEL}: {cost:.0f} B/px peak activations (allocator, slope 192²→320²)")
    if device.type != "cpu" or not Path("/proc/self/clear_refs").exists():
        return
    growth = []
    for side in (1024, 2048):
        x = torch.zeros(1, 3, side, side)
        with torch.inference_mode():
            model(x)  # once before: one-off buffers
            growth.append(peak_rss_growth(lambda: model(x))[0])
    print(f"  process peak RSS growth: 1024² {growth[0] / 1024**2:.0f} MiB, 2048² {growth[1] / 1024**2:.0f} MiB; "
          f"slope {(growth[1] - growth[0]) / (2048**2 - 1024**2):.0f} B/px")


def measure_all(device: torch.device, sides: tuple[int, int]) -> None:
    print(f"arch, output stride: B/px (slope {sides[0]}²→{sides[1]}²)")
    for arch in list_archs():
        for stride in (16, 8):
            try:
                model = build_model(arch, num_classes=21, output_stride=stride).eval().to(device)
            except ValueError:
                continue
            cost = measure_cost_per_pixel(model, device, sides=sides)
            print(f"  ({arch!r}, {stride}): {cost:.1f},", flush=True)


def whole_vs_tiles(loaded, megapixels: float, device: torch.device) -> None:
    h = int(round((megapixels * 1e6 * 3 / 4) ** 0.5))
    w = h * 4 // 3
    image = np.asarray(Image.open(PHOTO).convert("RGB").resize((w, h), Image.BILINEAR))
    cost = COST_PER_PIXEL.get((loaded.arch, loaded.output_stride)) or measure_cost_per_pixel(loaded.model, device)
    model_bytes = h * w * input_bytes_per_pixel(cost, channels=loaded.num_classes)
    free = available_bytes(device)
    auto_side = TileBudget().tile_for(h, w, model=loaded.model, device=device, channels=loaded.num_classes,
                                      keep_probs=False, arch=loaded.arch, output_stride=loaded.output_stride)
    print(f"{w}×{h} ({h * w / 1e6:.1f} MP): modelled {model_bytes / 2**30:.2f} GiB whole; free now "
          f"{(free or 0) / 2**30:.1f} GiB → tile_size='auto' picks {'whole' if auto_side >= max(h, w) else auto_side}")
    runs = {}
    for name, tile in (("whole", max(h, w)), ("1024 px tiles", 1024)):
        predictor = Predictor(loaded, device=device, tile_size=tile, keep_probs=False)
        predictor.predict(np.ascontiguousarray(image[:512, :512]))  # warm-up
        out = {}
        growth, seconds = peak_rss_growth(lambda: out.update(p=predictor.predict(image)))
        runs[name] = (seconds, growth, out["p"].labels)
        print(f"  {name:14s} {seconds:7.1f} s   peak RSS growth {growth / 2**30:5.2f} GiB", flush=True)
    (tw, _, lw), (tt, _, lt) = runs["whole"], runs["1024 px tiles"]
    print(f"  tiles / whole: {tt / tw:.2f}×; labels agree on {(lw == lt).mean() * 100:.2f} % of pixels")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side-mp", type=float, default=12.0, help="megapixels of the large image (default 12)")
    ap.add_argument("--measure", action="store_true", help="B/px of every registered architecture")
    ap.add_argument("--sides", type=int, nargs=2, default=(512, 768), help="--measure's two input sides")
    ap.add_argument("--skip-12mp", action="store_true", help="only the memory figures")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    with bundled_model_path(VOC_MODEL) as path:
        loaded = load_checkpoint(path, device=device)
    with torch.inference_mode():
        cost_figures(loaded.model, device)
    if args.measure:
        measure_all(device, tuple(args.sides))
    if not args.skip_12mp:
        whole_vs_tiles(loaded, args.side_mp, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
