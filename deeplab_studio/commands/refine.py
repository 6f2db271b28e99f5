"""`deeplab-studio refine IMAGE MASK -o OUT`: snap a label map to image edges with the dense CRF.

MASK is a palette PNG (mode P), a single-channel index PNG, or a colour PNG in the VOC colormap
(read by `storage.labelmaps.read_label_png`). OUT is a palette PNG (written atomically) with
MASK's palette, or the VOC colormap when MASK has none. With `--probs PROBS.npy` (C×H×W, e.g.
from `predict --save-probs`) the soft version runs on the model's probabilities; MASK then gives
the size, the palette and the labels of `--protect`ed pixels.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from deeplab_studio.commands import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="the image (any format storage.images reads)")
    parser.add_argument("mask", help="label map: palette PNG, index PNG or VOC-colour PNG")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="refined label map (palette PNG)")
    parser.add_argument("--probs", metavar="PROBS.npy", help="C×H×W softmax probabilities: use the soft CRF")
    parser.add_argument("--protect", metavar="EDIT.png",
                        help="1-bit/grayscale mask of pixels that keep MASK's label exactly (nonzero = keep)")
    parser.add_argument("--iterations", type=int, help="mean-field iterations")
    parser.add_argument("--sxy", type=float, help="appearance (bilateral) kernel range in pixels")
    parser.add_argument("--srgb", type=float, help="appearance kernel colour tolerance (0..255 levels)")
    parser.add_argument("--compat", type=float, help="appearance kernel weight")
    parser.add_argument("--confidence", type=float, help="trust in MASK's labels, 0.5..1 (hard labels only)")


def _params(args: argparse.Namespace):
    from deeplab_studio.ml.crf import CRFParams

    overrides = {"iterations": args.iterations, "bilateral_sxy": args.sxy, "bilateral_srgb": args.srgb,
                 "bilateral_compat": args.compat, "hard_confidence": args.confidence}
    try:
        return CRFParams(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        flag = {"bilateral_sxy": "--sxy", "bilateral_srgb": "--srgb", "bilateral_compat": "--compat",
                "hard_confidence": "--confidence", "iterations": "--iterations"}
        msg = str(exc)
        for field, name in flag.items():
            msg = msg.replace(f"CRFParams.{field}", name)
        raise CommandError(msg) from None


def _palette_of(path: Path) -> np.ndarray:
    """MASK's own palette when it is a palette PNG, else the VOC colormap (256×3 uint8)."""
    from PIL import Image

    from deeplab_studio.core.labels import IGNORE, IGNORE_COLOR, voc_colormap

    palette = voc_colormap(256)
    with Image.open(path) as im:
        if im.mode == "P" and im.getpalette():
            own = np.asarray(im.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
            palette[: len(own)] = own
            if len(own) <= IGNORE:
                palette[IGNORE] = IGNORE_COLOR
    return palette


def _load_probs(path: str, shape: tuple[int, int]) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if magic != b"\x93NUMPY":
        raise CommandError(f"{path}: not a .npy file (save the probabilities with numpy.save)")
    try:
        probs = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        if "pickle" in str(exc) or "object" in str(exc):
            raise CommandError(f"{path}: holds Python objects, not a float array; refused (never unpickled)") from None
        raise CommandError(f"{path}: not a readable .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise CommandError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(probs, np.ndarray) or probs.ndim != 3 or probs.shape[1:] != shape:
        got = getattr(probs, "shape", type(probs).__name__)
        raise CommandError(f"{path}: probabilities must be C×{shape[0]}×{shape[1]} (the mask's size), got {got}")
    return np.asarray(probs)


def run(args: argparse.Namespace) -> int:
    from deeplab_studio.ml.crf import refine, refine_labels
    from deeplab_studio.storage.images import ImageReadError, read_image
    from deeplab_studio.storage.labelmaps import read_label_png, read_mask_png, write_label_png

    params = _params(args)
    mask_path, out_path = Path(args.mask), Path(args.output)
    try:
        image = read_image(args.image)
        labels = read_label_png(mask_path)
        palette = _palette_of(mask_path)
        protect = read_mask_png(args.protect) if args.protect else None
    except ImageReadError as exc:  # LabelMapError is one too; both name the file
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{mask_path}: {exc}") from None
    if labels.shape != image.shape[:2]:
        raise CommandError(f"{mask_path}: label map is {labels.shape[1]}×{labels.shape[0]} but the image "
                           f"{args.image} is {image.shape[1]}×{image.shape[0]}")
    if protect is not None and protect.shape != labels.shape:
        raise CommandError(f"{args.protect}: protect mask is {protect.shape[1]}×{protect.shape[0]}, "
                           f"not {labels.shape[1]}×{labels.shape[0]} like the label map")
    t0 = time.perf_counter()
    try:
        if args.probs:
            probs = _load_probs(args.probs, labels.shape)
            out = refine(image, probs, protect=protect, params=params, labels=labels)
        else:
            out = refine_labels(image, labels, protect=protect, params=params)
    except ValueError as exc:
        raise CommandError(f"{args.probs or mask_path}: {exc}") from None
    try:
        write_label_png(out_path, out, palette)
    except OSError as exc:
        raise CommandError(f"{out_path}: cannot write ({exc.strerror or exc})") from None
    changed = int((out != labels).sum())
    print(f"refined {mask_path.name}: {changed} of {out.size} pixels changed "
          f"({time.perf_counter() - t0:.2f} s) -> {out_path}", file=sys.stderr)
    return 0
