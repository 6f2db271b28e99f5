"""The onnxruntime backend against eager torch on the CPU: seconds per image, ratio, agreement.

    .venv/bin/python benchmarks/bench_onnx_backend.py [--model M ...] [--images DIR] [--repeat 2]
                                                      [--threads N] [--exporter dynamo|torchscript]
                                                      [--skip-bf16] [--cache DIR]

For each model (default: the bundled VOC model; `--model` takes what `predict --model` takes, or
`random:ARCH` for random weights with 21 classes) and every image of `--images` (default
tests/data/voc_real/images, real VOC photographs), interleaved in one process:

- `Predictor` variants, whole image (uint8 in, probabilities/labels out): torch eager fp32 (the
  reference), onnxruntime (`backend="onnxruntime"`), torch channels_last fp32, and torch bf16
  autocast + channels_last (a callable backend; skipped with `--skip-bf16`);
- the bare network on a ready normalised tensor: `model(x)` and `session.run` (the baselines).

Each cell is the best of `--repeat` runs after one warm-up. Printed: seconds per image (sum of
the per-image bests / images), the ratio to torch eager fp32, and the argmax agreement with torch
eager fp32 over all pixels (and the worst image). The one-off export (into a fresh cache folder
unless `--cache`) is timed too. Threads: `--threads` (default all cores) for torch and for the
onnxruntime session alike.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from deeplab_studio.ml.checkpoints import load_checkpoint
from deeplab_studio.ml.onnx_backend import default_threads, load_onnx_forward
from deeplab_studio.ml.predictor import Predictor
from deeplab_studio.ml.zoo import build_model
from deeplab_studio.models import VOC_MODEL, bundled_model_path, bundled_models
from deeplab_studio.storage.images import is_image_file, read_image

from _common import best_of

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = ROOT / "tests" / "data" / "voc_real" / "images"


def load(spec: str):
    """A LoadedModel (from a bundled name or a checkpoint) or a random-weight nn.Module."""
    if spec.startswith("random:"):
        torch.manual_seed(0)
        return build_model(spec.split(":", 1)[1], num_classes=21).eval()
    if spec in bundled_models():
        with bundled_model_path(spec) as path:
            return load_checkpoint(path)
    return load_checkpoint(spec)


def torch_forward(model: torch.nn.Module, *, bf16: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Predictor backend: the network in channels_last, optionally under bf16 autocast."""
    net = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if not bf16:
            return net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x).float()

    forward.name = "torch-bf16-cl" if bf16 else "torch-cl"  # type: ignore[attr-defined]
    return forward


def bench_model(spec: str, images: list[Path], args: argparse.Namespace, cache: Path) -> None:
    model = load(spec)
    module = model if isinstance(model, torch.nn.Module) else model.model
    start = time.perf_counter()
    said: list[str] = []
    forward = load_onnx_forward(model, threads=args.threads, exporter=args.exporter, folder=cache,
                                on_export=said.append)
    setup = time.perf_counter() - start
    what = "export + session" if said else "session (cached export)"
    print(f"\n== {spec} ({getattr(model, 'arch', getattr(module, 'arch', '?'))}); {what}: {setup:.1f} s "
          f"({args.exporter} exporter)")

    predictors: dict[str, Predictor] = {
        "torch fp32 (eager)": Predictor(model, device="cpu", amp=None),
        "onnxruntime": Predictor(model, backend=forward),
        "torch channels_last": Predictor(model, backend=torch_forward(module, bf16=False)),
    }
    if not args.skip_bf16:
        predictors["torch bf16+channels_last"] = Predictor(model, backend=torch_forward(module, bf16=True))
    mean = torch.tensor(predictors["onnxruntime"]._mean_std[0]).view(1, 3, 1, 1)
    std = torch.tensor(predictors["onnxruntime"]._mean_std[1]).view(1, 3, 1, 1)

    seconds = {name: 0.0 for name in [*predictors, "plain model(x)", "plain session.run"]}
    agree = {name: [0, 0, 1.0] for name in predictors}  # equal pixels, pixels, worst image
    for path in images:
        image = read_image(path)
        reference = None
        for name, predictor in predictors.items():
            t, pred = best_of(lambda p=predictor, im=image: p.predict(im), args.repeat, warmup=True)
            seconds[name] += t
            if reference is None:
                reference = pred.labels
            same = int((pred.labels == reference).sum())
            agree[name][0] += same
            agree[name][1] += reference.size
            agree[name][2] = min(agree[name][2], same / reference.size)
        x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 - mean) / std
        with torch.inference_mode():
            seconds["plain model(x)"] += best_of(lambda x=x: module(x), args.repeat, warmup=True)[0]
        array = x.numpy()
        seconds["plain session.run"] += best_of(lambda a=array: forward.session.run(None, {"image": a}), args.repeat,
                                                 warmup=True)[0]

    n = len(images)
    base = seconds["torch fp32 (eager)"] / n
    print(f"{n} images, {args.threads} threads, best of {args.repeat}; agreement = argmax agreement with torch fp32")
    print(f"{'variant':<26} {'s/image':>8} {'× torch':>8} {'agreement':>10} {'worst image':>12}")
    for name, total in seconds.items():
        per = total / n
        cells = f"{name:<26} {per:8.3f} {base / per:8.2f}"
        if name in agree:
            same, pixels, worst = agree[name]
            cells += f" {100 * same / pixels:9.3f}% {100 * worst:11.3f}%"
        print(cells)
    plain_ratio = seconds["plain model(x)"] / seconds["plain session.run"]
    print(f"onnxruntime vs torch: {base / (seconds['onnxruntime'] / n):.2f}× through the Predictor, "
          f"{plain_ratio:.2f}× for the bare network")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, metavar="M",
                        help=f"a model as predict --model takes it, or random:ARCH (default {VOC_MODEL}); repeatable")
    parser.add_argument("--images", default=str(DEFAULT_IMAGES), metavar="DIR")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--cache", default=None, metavar="DIR", help="reuse this export cache (default: a fresh one)")
    args = parser.parse_args()
    images = sorted(p for p in Path(args.images).iterdir() if is_image_file(p))
    if not images:
        print(f"no images in {args.images}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{default_threads()} cores available")
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp)
        for spec in args.model or [VOC_MODEL]:
            bench_model(spec, images, args, cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
