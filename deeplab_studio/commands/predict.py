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
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from deeplab_studio.commands import CommandError
from deeplab_studio.commands.predict_outputs import (  # noqa: F401  (plural: also used by evaluate)
    MANIFEST_NAME, RUN_ERRNOS, OutputGuard, output_files, plural)


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
    parser.add_argument("--tile-size", type=int, default=1024, metavar="PX",
                        help="images with a longer side run in overlapping tiles of this size (default 1024)")
    parser.add_argument("--max-side", type=int, default=None, metavar="PX",
                        help="instead of tiling, shrink images to this longest side and scale the result back")
    parser.add_argument("--decode-workers", type=int, default=1, metavar="N",
                        help="threads decoding images ahead of the model (0 = decode in line; default 1)")


TORCHVISION_PREFIX = "torchvision:"


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
    if args.tile_size < 64:
        raise CommandError(f"--tile-size must be at least 64, not {args.tile_size}")
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
    cache first, said on stderr, when not cached)."""
    name = getattr(args, "backend", "torch")
    if name == "torch":
        return name
    from deeplab_studio.ml.onnx_backend import load_onnx_forward
    from deeplab_studio.ml.onnx_export import OnnxExportError, OnnxUnavailable

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        return load_onnx_forward(loaded, on_export=say)
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


class Progress:
    """One stderr line per image with the running rate (successful images per second)."""

    def __init__(self, total: int, *, quiet: bool = False) -> None:
        self.total, self.quiet, self.done, self.failed = total, quiet, 0, 0
        self._open_line = False  # a `tile k/n` line is on the terminal, not yet ended
        self.start = time.perf_counter()

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return (self.done - self.failed) / elapsed if elapsed > 0 else 0.0

    def tiles(self, path: Path):
        """A `Predictor.predict(progress=...)` callback: on a terminal, a `tile k/n` line that the
        next message overwrites, so a large tiled image is not minutes of silence."""
        stream = sys.stderr
        if self.quiet or not stream.isatty():
            return None

        def show(done: int, total: int) -> None:
            if total > 1:
                self._open_line = done < total
                end = "" if self._open_line else "\r\x1b[K"
                print(f"\r[{self.done + 1}/{self.total}] {path}: tile {done}/{total}{end}", end="", file=stream,
                      flush=True)
        return show

    def step(self, path: Path, error: BaseException | None = None) -> None:
        if self._open_line:  # a failure mid-image: clear its tile line first
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)
            self._open_line = False
        self.done += 1
        if error is not None:
            self.failed += 1
            text, kind = str(error), type(error).__name__
            if text.startswith(str(path)):  # storage errors already name the file
                pass
            elif isinstance(error, MemoryError):
                text = f"{path}: out of memory" + (f" ({text})" if text else "")
            elif text and isinstance(error, (ValueError, RuntimeError, OSError)):
                text = f"{path}: {text}"
            else:  # an unexpected kind of error: name it
                text = f"{path}: {kind}: {text}" if text else f"{path}: {kind}"
            print(f"[{self.done}/{self.total}] skipped {text}", file=sys.stderr, flush=True)
        elif not self.quiet:
            print(f"[{self.done}/{self.total}] {path}  ({self.rate():.2f} images/s)", file=sys.stderr, flush=True)

    def summary(self, what: str) -> str:
        elapsed = time.perf_counter() - self.start
        ok = self.done - self.failed
        text = f"{what} {ok} of {plural(self.total, 'image')} in {elapsed:.1f} s ({self.rate():.2f} images/s)"
        return text + (f"; {self.failed} failed (see 'skipped' above)" if self.failed else "")


# --- inputs and output names -------------------------------------------------------------------------
def collect_images(inputs: list[str], *, exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """(image path, output stem relative to OUT) for every input file and image in input folders.

    Stems mirror sub-folders of folder inputs; clashes (same stem from two inputs, or `a.jpg`
    beside `a.png`) get the extension appended, then a counter, in input order.
    """
    from deeplab_studio.storage.images import is_image_file

    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for arg in inputs:
        root = Path(arg)
        if root.is_dir():
            files = sorted(
                f for f in root.rglob("*")
                if f.is_file() and is_image_file(f)
                and not any(part.startswith(".") for part in f.relative_to(root).parts)
                and not (exclude is not None and f.resolve().is_relative_to(exclude))
            )
            items = [(f, f.relative_to(root).with_suffix("")) for f in files]
        elif root.is_file():
            items = [(root, Path(root.stem))]
        else:
            raise CommandError(f"{arg}: no such file or folder")
        for path, stem in items:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                found.append((path, stem))
    taken: set[str] = set()
    named: list[tuple[Path, Path]] = []
    for path, stem in found:
        candidates = [stem, stem.with_name(f"{stem.name}_{path.suffix.lstrip('.').lower()}")]
        candidates += [stem.with_name(f"{stem.name}_{n}") for n in range(2, len(found) + 2)]
        for cand in candidates:
            if cand.as_posix().lower() not in taken:
                taken.add(cand.as_posix().lower())
                named.append((path, cand))
                break
    return named


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
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the label maps (created if needed). Never overwrites an input image or a "
                             f"file predict did not write (listed with its checksum in DIR/{MANIFEST_NAME}): "
                             "predict refuses before it starts; re-running into the same DIR replaces its own files")
    add_model_arguments(parser)
    parser.add_argument("--save-probs", action="store_true", help="also write <name>.probs.npy (C×H×W float16)")
    parser.add_argument("--overlay", action="store_true", help="also write <name>.overlay.jpg (classes over the image)")
    parser.add_argument("--quiet", action="store_true", help="report only failures and the summary")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out}: exists and is not a folder")
    images = collect_images(args.inputs, exclude=out.resolve())
    if not images:
        raise CommandError(f"no images found in {' '.join(args.inputs)}")
    files = {path: output_files(stem, probs=args.save_probs, overlay=args.overlay) for path, stem in images}
    guard = OutputGuard(out)
    guard.check([f for fs in files.values() for f in fs], [path for path, _ in images])  # before any work

    from deeplab_studio import __version__
    from deeplab_studio.ml.prefetch import prefetch_images
    from deeplab_studio.storage.images import read_image
    from deeplab_studio.storage.labelmaps import encode_label_png

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    predictor = load_predictor(args, keep_probs=args.crf or args.save_probs, on_warning=warn)
    refine = None
    if args.crf:  # the model card's CRF setting (ml.crf.model_crf), else the defaults
        from deeplab_studio.ml.crf import model_crf

        try:
            refine = model_crf(args.model)
        except ValueError as exc:
            raise CommandError(f"{args.model}: {exc}") from None
    palette = model_palette(predictor)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"--out {out}: cannot create the folder ({exc})") from None

    provenance = {"Software": f"deeplab-studio {__version__} predict"}
    progress = Progress(len(images), quiet=args.quiet)
    where = f"{predictor.device}" + ("" if predictor.backend == "torch" else f" ({predictor.backend})")
    print(f"predicting {plural(len(images), 'image')} on {where} into {out}", file=sys.stderr, flush=True)
    try:
        for path, image in prefetch_images([p for p, _ in images], workers=args.decode_workers, read=read_image):
            if isinstance(image, Exception):
                progress.step(path, image)
                continue
            try:
                pred = predictor.predict(image, progress=progress.tiles(path))
                labels = refine(image, pred.probs) if refine is not None else pred.labels
                data = [encode_label_png(labels, palette, text=provenance)]  # all made first: a failure writes nothing
                if args.save_probs:
                    data.append(npy_bytes(pred.probs.astype(np.float16, copy=False)))
                if args.overlay:
                    data.append(overlay_jpeg(image, labels, palette))
                for rel, blob in zip(files[path], data):
                    guard.write(rel, blob)
            except CommandError:
                raise
            except Exception as exc:  # noqa: BLE001 - one file's failure (even out of memory) must not stop a batch
                if isinstance(exc, OSError) and exc.errno in RUN_ERRNOS:
                    raise CommandError(f"{exc}; stopped after {progress.done} of "
                                       f"{plural(len(images), 'image')}") from None
                progress.step(path, exc)
                continue
            progress.step(path)
    finally:
        guard.close()
    print(progress.summary("wrote label maps for"), file=sys.stderr, flush=True)
    return 1 if progress.failed else 0
