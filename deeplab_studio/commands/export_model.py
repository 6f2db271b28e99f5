"""`deeplab-studio export-model`: a model as an ONNX file (dynamic batch, height and width).

MODEL is whatever `predict --model` takes (a bundled model's name, a checkpoint, a Hugging Face
folder, `torchvision:NAME`). The file's input `image` is float32 N×3×H×W RGB normalised as
`(pixel / 255 - mean) / std`; its output `logits` is N×C×H×W. Mean, std, class names and colours,
architecture and output stride are in the file's metadata_props (`ml.onnx_export`).

Before it writes, the export is run in ONNX Runtime (when installed) at two input sizes and its
logits compared with torch's; a difference over `CHECK_TOLERANCE` × the largest logit (at least 1)
writes nothing (relative: random-weight ResNet-101s reach logits of ~6e4). The file is
written atomically. An existing OUT is refused unless `--force` (no command writes over a file it
did not create), and never replaced when it is the model file itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from deeplab_studio.commands import CommandError

#: largest max |logit difference| between ONNX Runtime and torch that the check accepts, per unit
#: of the largest |logit| (at least 1)
CHECK_TOLERANCE = 1e-3
CHECK_SIZES = ((1, 3, 96, 128), (2, 3, 161, 97))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from deeplab_studio.models import VOC_MODEL

    parser.add_argument("model", metavar="MODEL",
                        help=f"the model, as `predict --model` takes it: a bundled model's name (e.g. {VOC_MODEL}), "
                             "a checkpoint file, a Hugging Face model folder or torchvision:NAME")
    parser.add_argument("--onnx", required=True, metavar="OUT", help="the ONNX file to write")
    parser.add_argument("--opset", type=int, default=None, metavar="N",
                        help="ONNX opset version (default 18; the dynamo exporter writes 18 and later)")
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                        help="torch's exporter: dynamo (torch.export, the default) or torchscript "
                             "(the legacy tracer, deprecated by torch, ~10× faster)")
    parser.add_argument("--output-stride", type=int, choices=(8, 16), default=None,
                        help="export the network at output stride 8 or 16 (default: the checkpoint's)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the comparison with torch in ONNX Runtime before writing")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")


def _check_target(out: Path, force: bool) -> None:
    if out.is_dir():
        raise CommandError(f"--onnx {out}: is a folder")
    if out.exists() and not force:
        raise CommandError(f"--onnx {out}: exists; export-model replaces a file only with --force")
    if not out.parent.is_dir() and out.parent.exists():
        raise CommandError(f"--onnx {out}: {out.parent} is not a folder")


def _load(args: argparse.Namespace) -> Any:
    from deeplab_studio.commands.predict import model_file
    from deeplab_studio.ml.checkpoints import CheckpointError, load_checkpoint

    out = Path(args.onnx)
    try:
        with model_file(args.model) as path:
            if out.exists() and Path(path).exists() and out.resolve() == Path(path).resolve():
                raise CommandError(f"--onnx {out}: is the model file itself")
            if out.exists() and Path(path).is_dir() and out.resolve().is_relative_to(Path(path).resolve()):
                raise CommandError(f"--onnx {out}: is inside the model folder {path}")
            return load_checkpoint(path, device="cpu", output_stride=args.output_stride)
    except CheckpointError as exc:
        raise CommandError(str(exc)) from None
    except ValueError as exc:  # e.g. an output stride the architecture does not support
        raise CommandError(f"{args.model}: {exc}") from None


def compare_with_torch(data: bytes, model: Any, sizes=CHECK_SIZES) -> list[tuple[tuple[int, ...], float, float]]:
    """(input shape, max |logit difference|, max |logit|) of the ONNX bytes in ONNX Runtime against
    `model` in torch, on seeded random inputs of each size."""
    import torch

    from deeplab_studio.ml.onnx_backend import OnnxForward

    forward = OnnxForward(data)
    generator = torch.Generator().manual_seed(0)
    results = []
    for shape in sizes:
        x = torch.randn(*shape, generator=generator)
        with torch.inference_mode():
            expected = model(x)
        got = forward(x)
        results.append((tuple(shape), float((got - expected).abs().max()), float(expected.abs().max())))
    return results


def run(args: argparse.Namespace) -> int:
    from deeplab_studio.ml.onnx_export import DEFAULT_OPSET, OnnxExportError, OnnxUnavailable, onnx_bytes, require

    out = Path(args.onnx)
    _check_target(out, args.force)
    try:
        require("onnx", *(("onnxscript",) if args.exporter == "dynamo" else ()))
    except OnnxUnavailable as exc:
        raise CommandError(str(exc)) from None
    import onnx

    opset = DEFAULT_OPSET if args.opset is None else args.opset
    low, high = (18, onnx.defs.onnx_opset_version()) if args.exporter == "dynamo" else (9, 20)
    if not low <= opset <= high:
        raise CommandError(f"--opset {opset}: the {args.exporter} exporter writes opsets {low} to {high}")
    loaded = _load(args)
    print(f"exporting {loaded.arch} ({loaded.num_classes} classes, output stride {loaded.output_stride}) "
          f"with the {args.exporter} exporter, opset {opset}", file=sys.stderr, flush=True)
    try:
        data = onnx_bytes(loaded, exporter=args.exporter, opset=opset)
    except OnnxExportError as exc:
        raise CommandError(str(exc)) from None
    check = ""
    if not args.no_check:
        try:
            require("onnxruntime")
        except OnnxUnavailable:
            check = "; not checked (onnxruntime is not installed)"
        else:
            diffs = compare_with_torch(data, loaded.model)
            shown = ", ".join(f"{s[2]}×{s[3]}: {d:.1e}" for s, d, _ in diffs)
            if any(d > CHECK_TOLERANCE * max(1.0, scale) for _, d, scale in diffs):
                raise CommandError(f"the export disagrees with torch in onnxruntime (max |logit difference| "
                                   f"{shown}; tolerance {CHECK_TOLERANCE:g} × the largest logit); nothing written")
            check = f"; onnxruntime agrees with torch (max |logit difference| {shown})"
    if out.exists() and not args.force:  # appeared while exporting
        raise CommandError(f"--onnx {out}: exists; export-model replaces a file only with --force")
    from deeplab_studio.core.atomic_file import write_bytes_atomic

    try:
        write_bytes_atomic(out, data)
    except OSError as exc:
        raise CommandError(f"--onnx {out}: cannot write ({exc.strerror or exc})") from None
    mean, std = (", ".join(f"{v:g}" for v in values) for values in (loaded.mean, loaded.std))
    print(f"wrote {out} ({len(data) / 2**20:.1f} MB){check}", file=sys.stderr)
    print(f"input 'image': float32 N×3×H×W RGB, (pixel/255 - mean)/std with mean ({mean}), std ({std}); "
          f"output 'logits': N×{loaded.num_classes}×H×W (class names and colours in the metadata)", file=sys.stderr)
    return 0
