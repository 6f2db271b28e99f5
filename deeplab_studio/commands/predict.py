"""`deeplab-studio predict`: label maps for images and folders of images with a checkpoint.

Writes, for every input image, `OUT/<name>.png` (palette PNG, class indices, the checkpoint's
class colours or the VOC colormap), optionally `<name>.probs.npy` (C×H×W float16) and
`<name>.overlay.jpg`. Folder inputs are searched recursively and their sub-folders are mirrored
under OUT, so equal file names in different folders never overwrite each other.

Never lose a user's work: before any work (before the model loads) predict computes every output
path and refuses (one line, exit status 2) if one is an input image (the same file however spelled:
links, case-insensitive file systems) or an existing file predict did not write. Its own files are
listed in `OUT/.deeplab-studio-predict.jsonl`, one (file, sha256) line appended *before* each write:
a file is replaced only while its bytes are bytes predict wrote under that name, so a file the user
edited or put there is kept; each target is checked again just before it is written. A crash, a lost
list or a concurrent run can only make predict refuse, never overwrite.

A file that fails (decode, prediction, out of memory, write) is reported ("skipped ...") and the batch
goes on; only a failure of the whole run (the model, a full disk) stops it. Exit status 1 if any failed.

`--shard K/N` predicts one N-th of the inputs (`predict_shard`: split by a hash of each file's
relative path), into its own list of files and a summary; `--merge-report OUT` totals the shards.
A shard, or a run with `--resume`, skips images whose files are complete (all there, unchanged,
listed with the same model and label options); writes are atomic, so a killed run is simply run
again. `--engine ray` runs the same model in a pool of Ray actors (`predict_ray`) and writes the
same files under the same rules.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from deeplab_studio.commands import CommandError
from deeplab_studio.commands.predict_engine import Progress
from deeplab_studio.commands.predict_inputs import (  # noqa: F401 (Input, collect_images: also imported from here)
    Input, collect_images, collect_inputs)
from deeplab_studio.commands.predict_outputs import (
    MANIFEST_NAME, OutputGuard, manifest_name, output_files, plural)


# --- options shared with `evaluate` ----------------------------------------------------------------
def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --backend, --output-stride, --tta, --crf, --tile-size, --max-side, --decode-workers."""
    from deeplab_studio.models import VOC_MODEL

    parser.add_argument("--model", default=None, metavar="MODEL",
                        help=f"the model (default: {VOC_MODEL}, the bundled DeepLab v3 MobileNetV2 trained on the "
                             "21 Pascal VOC classes): a bundled model's name; a checkpoint file (this project's "
                             ".safetensors, a VainF .pth, torchvision weights); a Hugging Face model folder; or "
                             "torchvision:NAME (deeplabv3_resnet50|resnet101|mobilenet_v3_large: torchvision's "
                             "VOC-class weights from the torch hub cache, downloaded once)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="run the network in torch (default) or in ONNX Runtime on the CPU with all cores (the "
                             "optional extra deeplab-studio[onnx]; the model is exported once and cached; same "
                             "tiling and TTA)")
    parser.add_argument("--output-stride", type=int, choices=(8, 16), default=None,
                        help="run the network at output stride 8 or 16 (default: the checkpoint's)")
    parser.add_argument("--tta", choices=("flip", "ms", "ms-paper"), default=None,
                        help="test-time augmentation: flip; ms (scales 0.75/1/1.25, each with flip; ~7× slower); "
                             "ms-paper (the paper's 0.5-1.75 in steps of 0.25, each with flip; ~20× slower, ~2.6× the memory)")
    parser.add_argument("--crf", action="store_true", help="refine each prediction with the dense CRF")
    parser.add_argument("--tile-size", type=tile_size, default=1024, metavar="PX|auto",
                        help="images with a longer side run in overlapping tiles of this size (default 1024); "
                             "auto: each image whole when it fits half the memory free on the device, else the "
                             "largest tiles that do")
    parser.add_argument("--max-side", type=int, default=None, metavar="PX",
                        help="instead of tiling, shrink images to this longest side and scale the result back")
    parser.add_argument("--decode-workers", type=int, default=1, metavar="N",
                        help="threads decoding images ahead of the model (0 = decode in line; default 1)")


TORCHVISION_PREFIX = "torchvision:"


def tile_size(text: str) -> int | str:
    """--tile-size: "auto", or a whole number of pixels, at least 64."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of pixels or 'auto', not {text!r}") from None
    if size < 64:
        raise argparse.ArgumentTypeError(f"must be at least 64, not {size}")
    return size


@contextmanager
def model_file(model: str | None) -> Iterator[str]:
    """`--model` as a path `load_checkpoint` reads, while the context is open: None is the bundled
    VOC model; an existing file or folder is itself; a bundled model's name is its weights (found
    with `deeplab_studio.models`, never relative to the source tree); `torchvision:NAME` is fetched
    into (or found in) the torch hub cache, with download progress on stderr. Anything else is
    one CommandError naming the bundled models."""
    from deeplab_studio.models import VOC_MODEL, bundled_model_path, bundled_models

    name = VOC_MODEL if model is None else model
    if model is not None and Path(model).exists():
        yield model
        return
    if name.startswith(TORCHVISION_PREFIX):
        yield _torchvision_file(name[len(TORCHVISION_PREFIX):])
        return
    bundled = bundled_models()
    if name in bundled:
        with bundled_model_path(name) as path:
            yield str(path)
        return
    if model is not None and (Path(model).suffix or Path(model).name != model):
        yield model  # a path: load_checkpoint says "file not found"
        return
    what = "the default model is not" if model is None else "file not found, and not"
    raise CommandError(f"{name}: {what} a bundled model (bundled: {', '.join(bundled) or 'none'})")


def _torchvision_file(name: str) -> str:
    from deeplab_studio.ml.checkpoints import fetch_torchvision_weights

    shown = [-1]

    def progress(done: int, total: int | None) -> None:
        mb = done >> 20
        if mb != shown[0] or done == total:
            shown[0] = mb
            of = f" of {total / 2**20:.0f}" if total else ""
            print(f"\rdownloading {name}: {done / 2**20:.0f}{of} MB", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)

    return str(fetch_torchvision_weights(name, progress=progress))  # CheckpointError: caller reports it


def load_predictor(args: argparse.Namespace, *, keep_probs: bool, on_warning=None) -> Any:
    """A Predictor for `args.model` with the options above; bad input → CommandError. Without
    `--model` it is the bundled VOC model, and `args.model` becomes its name (for reports)."""
    from deeplab_studio.ml.checkpoints import CheckpointError, load_checkpoint
    from deeplab_studio.ml.predictor import DeviceError, Predictor, resolve_device
    from deeplab_studio.models import VOC_MODEL

    try:
        device = resolve_device(args.device)
    except DeviceError as exc:
        raise CommandError(str(exc)) from None
    if args.max_side is not None and args.max_side < 32:
        raise CommandError(f"--max-side must be at least 32, not {args.max_side}")
    _check_backend(args, device)  # before the model loads
    try:
        with model_file(args.model) as path:
            loaded = load_checkpoint(path, device="cpu", output_stride=args.output_stride)
    except CheckpointError as exc:
        raise CommandError(str(exc)) from None
    except ValueError as exc:  # e.g. an output stride the architecture does not support
        raise CommandError(f"{args.model or VOC_MODEL}: {exc}") from None
    if args.model is None:
        args.model = VOC_MODEL
    backend = _backend(args, loaded)
    return Predictor(
        loaded, device=device if backend == "torch" else "cpu", tta=args.tta, tile_size=args.tile_size,
        large_image="downscale" if args.max_side else "tile", max_side=args.max_side,
        keep_probs=keep_probs, on_warning=on_warning, backend=backend,
    )


def _check_backend(args: argparse.Namespace, device: Any) -> None:
    """A backend other than torch: on the CPU, with its packages installed (else CommandError)."""
    name = getattr(args, "backend", "torch")
    if name == "torch":
        return
    if device.type != "cpu" and args.device != "auto":
        raise CommandError(f"--backend {name} runs on the CPU, not on --device {args.device}")
    from deeplab_studio.ml.onnx_export import OnnxUnavailable, require

    try:
        require("onnxruntime", "onnx", "onnxscript")
    except OnnxUnavailable as exc:
        raise CommandError(f"--backend {name}: {exc}") from None


def _backend(args: argparse.Namespace, loaded: Any) -> Any:
    """`--backend` as Predictor takes it: "torch", or the ONNX Runtime forward (exported into the
    cache first, said on stderr, when not cached), in `args.threads` threads when set (a Ray actor's
    CPUs), else on every core."""
    name = getattr(args, "backend", "torch")
    if name == "torch":
        return name
    from deeplab_studio.ml.onnx_backend import load_onnx_forward
    from deeplab_studio.ml.onnx_export import OnnxExportError, OnnxUnavailable

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        return load_onnx_forward(loaded, threads=vars(args).get("threads"), on_export=say)
    except OnnxUnavailable as exc:
        raise CommandError(f"--backend {name}: {exc}") from None
    except OnnxExportError as exc:
        raise CommandError(f"--backend {name}: {args.model}: {exc}") from None


def model_palette(predictor: Any) -> np.ndarray:
    """256×3 palette: the checkpoint's class colours over the VOC colormap (255 = ignore colour)."""
    from deeplab_studio.core.labels import IGNORE, IGNORE_COLOR, voc_colormap

    palette = voc_colormap(256)
    colors = predictor.class_colors
    if colors:
        palette[: len(colors)] = np.asarray(colors, dtype=np.uint8)[:255]
    palette[IGNORE] = IGNORE_COLOR
    return palette


# --- the run's key (its inputs: predict_inputs) -------------------------------------------------------
def run_key(args: argparse.Namespace) -> str:
    """A key of what decides the labels: the model's bytes and the options that change them. Files
    listed under the current key are complete results (`--resume`, `--shard` skip their images)."""
    with model_file(args.model) as name:
        path = Path(name)
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        model = hashlib.sha256()
        for f in files:
            model.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
            with open(f, "rb") as stream:
                while chunk := stream.read(1 << 20):
                    model.update(chunk)
    options = {"model": model.hexdigest(), "output_stride": args.output_stride, "tta": args.tta,
               "crf": bool(args.crf), "tile_size": args.tile_size, "max_side": args.max_side}
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]


# --- outputs ------------------------------------------------------------------------------------------
def overlay_jpeg(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> bytes:
    """JPEG bytes of `image` with non-background classes tinted in their palette colour."""
    from PIL import Image

    tinted = image.astype(np.float32)
    mask = labels != 0
    tinted[mask] = (1 - alpha) * tinted[mask] + alpha * palette[labels[mask]]
    buf = io.BytesIO()
    Image.fromarray(np.clip(tinted + 0.5, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders (searched recursively)")
    parser.add_argument("--out", metavar="DIR",
                        help="folder for the label maps (created if needed). Never overwrites an input image or a "
                             f"file predict did not write (listed with its checksum in DIR/{MANIFEST_NAME}): "
                             "predict refuses before it starts; re-running into the same DIR replaces its own files")
    add_model_arguments(parser)
    parser.add_argument("--save-probs", action="store_true", help="also write <name>.probs.npy (C×H×W float16)")
    parser.add_argument("--overlay", action="store_true", help="also write <name>.overlay.jpg (classes over the image)")
    parser.add_argument("--quiet", action="store_true", help="report only failures and the summary")
    group = parser.add_argument_group("many machines and processes")
    group.add_argument("--shard", metavar="K/N",
                       help="predict only shard K of N (K = 0..N-1; an image's shard is a hash of its path relative "
                            "to its input folder, so adding files moves none): N processes, e.g. a SLURM job array "
                            "(--array=0-(N-1) and --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), cover the "
                            "inputs into one OUT. Implies --resume; each shard keeps its own list of files and a "
                            "summary in OUT")
    group.add_argument("--resume", action="store_true",
                       help="skip images whose files are complete: all there, unchanged, written with the same "
                            "model and label options (--output-stride, --tta, --crf, --tile-size, --max-side)")
    group.add_argument("--merge-report", metavar="OUT",
                       help="instead of predicting: total the shards' summaries in OUT and name the inputs that are "
                            "missing or failed (with INPUTs: checked against them); exit status 1 unless every "
                            "input is done exactly once")
    group.add_argument("--engine", choices=("plain", "ray"), default="plain",
                       help="plain: this process (default); ray: a Ray Data pipeline over a pool of model-holding "
                            "actors (the optional extra deeplab-studio[ray]); the same files and the same rules")
    group.add_argument("--workers", type=int, default=2, metavar="N", help="--engine ray: actors (default 2)")
    group.add_argument("--cpus-per-worker", type=float, default=1, metavar="C",
                       help="--engine ray: CPUs per actor, its torch or ONNX Runtime threads (default 1)")
    group.add_argument("--gpus-per-worker", type=float, default=0, metavar="G",
                       help="--engine ray: GPUs per actor (e.g. 1, or 0.5 for two actors per GPU; default 0: CPU)")
    group.add_argument("--address", metavar="ADDR",
                       help="--engine ray: join this Ray cluster (e.g. auto, or ray://HOST:10001; inputs and the "
                            "model must be readable on every node); default: start a local one for this run")


def run(args: argparse.Namespace) -> int:
    from deeplab_studio.commands.predict_shard import ShardSummary, parse_shard, report, shard_of

    if args.merge_report is not None:
        return report(args)
    if args.out is None or not args.inputs:
        raise CommandError("give the images and --out DIR (or --merge-report OUT)")
    shard = parse_shard(args.shard) if args.shard else None
    if args.engine == "ray":
        from deeplab_studio.commands.predict_ray import check_options

        check_options(args)  # before any work
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out}: exists and is not a folder")
    listing = collect_inputs(args.inputs, exclude=out.resolve())
    if not listing:
        raise CommandError(f"no images found in {' '.join(args.inputs)}")
    mine = [item for item in listing if shard is None or shard_of(item.key, shard[1]) == shard[0]]
    files = {item.path: output_files(item.stem, probs=args.save_probs, overlay=args.overlay) for item in mine}
    guard = OutputGuard(out, manifest=manifest_name(shard))
    guard.check([f for fs in files.values() for f in fs], [item.path for item in listing])  # before any work

    from deeplab_studio.commands.predict_engine import Renderer, run_plain

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    # the model loads here, so its errors come before any file is written; with Ray on the CPU (the
    # workers load it again, on their devices)
    checked = argparse.Namespace(**(vars(args) | ({"device": "cpu"} if args.engine == "ray" else {})))
    render = Renderer(checked, on_warning=warn)
    args.model = checked.model  # the bundled model's name when --model was not given
    guard.run = run_key(args)
    complete = [(args.resume or shard is not None) and guard.complete(files[item.path]) for item in mine]
    skipped = [item for item, done in zip(mine, complete) if done]
    todo = [item for item, done in zip(mine, complete) if not done]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"--out {out}: cannot create the folder ({exc})") from None
    summary = None
    if shard is not None:
        summary = ShardSummary(out, shard, listing, mine, run=guard.run, model=str(args.model), engine=args.engine)
        summary.start(skipped)
    progress = Progress(len(todo), quiet=args.quiet)
    backend = "" if render.predictor.backend == "torch" else f" ({render.predictor.backend})"
    engine = f" with Ray ({plural(args.workers, 'worker')})" if args.engine == "ray" else \
        f" on {render.predictor.device}{backend}"
    part = f"shard {shard[0]}/{shard[1]}: " if shard else ""
    done = f" ({len(skipped)} of {plural(len(mine), 'image')} already done)" if skipped else ""
    print(f"{part}predicting {plural(len(todo), 'image')}{engine} into {out}{done}", file=sys.stderr, flush=True)
    error: str | None = "interrupted"
    try:
        if args.engine == "ray":
            from deeplab_studio.commands.predict_ray import run_ray

            del render  # the workers hold the model
            run_ray(args, [item.path for item in todo], files, guard, progress)
        else:
            run_plain([item.path for item in todo], files, guard, render, progress, decode_workers=args.decode_workers)
        error = None
    except CommandError as exc:
        error = str(exc)
        raise
    finally:
        guard.close()
        if summary is not None:
            summary.finish(progress.written, progress.failures, error=error)
    print(progress.summary(f"{part}wrote label maps for"), file=sys.stderr, flush=True)
    return 1 if progress.failed else 0
