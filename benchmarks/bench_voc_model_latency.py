"""CPU latency of the bundled VOC model at 513×513: Predictor vs LiteRT int8 vs a plain `model(x)`.

    .venv/bin/python benchmarks/bench_voc_model_latency.py [--repeat 15] [--threads N]

One process, one real VOC val crop (tests/data/voc_real), the three calls interleaved so that load
changes on a shared machine hit all of them alike; medians over `--repeat` after one warm-up each:

- `Predictor.predict(uint8 image)`: the bundled float16-stored model (run in float32) with
  normalisation, softmax, argmax, confidence and copies;
- `model(x)`: the same network on a ready normalised tensor (the baseline, ratio 1.00);
- the source int8 TFLite file in LiteRT's interpreter (XNNPACK, `--threads` threads): uint8 image
  in, argmax labels out.

Torch and LiteRT get the same thread count (default: torch's own).

Measured here (2 cores, otherwise idle; median of 15): 2 threads: model(x) 97 ms, Predictor 104 ms
(1.07×), LiteRT int8 35.5 ms (0.37×: 2.7× faster than float32 torch); 1 thread: 167 / 188 (1.12×)
/ 61 ms (0.37×). Under load from other processes all three slow down, torch far more than LiteRT.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deeplab_studio.ml.checkpoints import load_checkpoint
from deeplab_studio.ml.predictor import Predictor
from deeplab_studio.models import VOC_MODEL, bundled_model_path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
TFLITE = DATA / "coral_deeplabv3_mnv2_pascal" / "deeplabv3_mnv2_pascal_quant.tflite"
IMAGE = DATA / "voc_real" / "images" / "2007_000033.png"


def calls(threads: int) -> dict[str, Callable[[], object]]:
    """The three benchmarked calls on the same 513×513 image."""
    image = np.array(Image.open(IMAGE).convert("RGB"))
    with bundled_model_path(VOC_MODEL) as path:
        loaded = load_checkpoint(path)
    predictor = Predictor(loaded, device="cpu")
    model = loaded.model.float().eval()
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1

    def plain() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    out: dict[str, Callable[[], object]] = {"model(x)": plain, "Predictor": lambda: predictor.predict(image)}
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        print("LiteRT (ai_edge_litert) is not installed: its row is skipped")
        return out
    it = Interpreter(model_path=str(TFLITE), num_threads=threads)
    it.allocate_tensors()
    inp, res = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def litert() -> np.ndarray:
        it.set_tensor(inp, image[None])
        it.invoke()
        return it.get_tensor(res)

    out["LiteRT int8"] = litert
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fns = calls(args.threads)
    for fn in fns.values():
        fn()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeat):
        for name, fn in fns.items():  # interleaved
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    base = statistics.median(samples["model(x)"])
    print(f"513×513, CPU, {args.threads} thread(s), median of {args.repeat} (min–max in brackets)")
    print(f"{'call':14s} {'ms':>8s} {'× model(x)':>11s}")
    for name, ts in samples.items():
        med = statistics.median(ts)
        print(f"{name:14s} {med * 1e3:8.1f} {med / base:11.2f}   [{min(ts) * 1e3:.1f}–{max(ts) * 1e3:.1f}]")


if __name__ == "__main__":
    main()
