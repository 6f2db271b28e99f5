"""`deeplab-studio convert MODEL.tflite --out NAME.safetensors`: a TFLite DeepLab as a checkpoint.

Reads TensorFlow DeepLab's mobile v3 (MobileNetV2, depth multiplier 1.0 or 0.5) from a TFLite
file — weights de-quantized, op options checked — and writes this project's checkpoint format
(`mean = std = 0.5`: the network sees x/127.5 − 1) with a model card `NAME.json` beside it
(source file and its sha256, licence, classes, conversion). It refuses to write over a file that
is not a checkpoint it converted earlier.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from deeplab_studio.commands import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.tflite", help="a TFLite file of TF DeepLab's mobile v3")
    parser.add_argument("--out", required=True, metavar="NAME.safetensors", help="checkpoint to write")
    parser.add_argument("--labels", metavar="FILE", help="class names, one per line in index order "
                        "(default: the Pascal VOC names when the model has 21 classes)")
    parser.add_argument("--float16", action="store_true", help="store the weights as float16 (half the size)")
    parser.add_argument("--licence", default="", help="licence of the weights, for the model card")
    parser.add_argument("--source", default="", help="where the TFLite file comes from, for the model card")


def _ours(path: Path) -> bool:
    """True when `path` is a checkpoint that `convert` wrote (so it may be replaced)."""
    from deeplab_studio.ml.checkpoints import read_metadata

    try:
        meta = read_metadata(path)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
    return bool(meta and (meta.get("training") or {}).get("converted_from"))


def model_card(out: Path, args: argparse.Namespace, graph, loaded_names: list[str], arch: str) -> dict:
    """The model card written beside the checkpoint (extended later with measured figures)."""
    from deeplab_studio import __version__

    data = out.read_bytes()
    return {
        "name": out.stem, "arch": arch, "file": out.name, "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data), "num_classes": len(loaded_names), "classes": loaded_names,
        "input": "RGB; the network sees x/127.5 - 1 (checkpoint mean = std = 0.5)",
        "output_stride": 16, "weights_dtype": "float16" if args.float16 else "float32",
        "source": {"file": Path(args.model).name, "sha256": graph.sha256, "where": args.source},
        "licence": args.licence or "not stated: give --licence",
        "conversion": {"tool": f"deeplab-studio {__version__} convert",
                       "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                       "notes": "int8 weights de-quantized (scale, zero point); batch norm folded in the "
                                "source, kept as identity layers"},
        "measured": {},
    }


def run(args: argparse.Namespace) -> int:
    from deeplab_studio.ml.checkpoints import load_checkpoint, save_checkpoint
    from deeplab_studio.ml.tf_mobile import TF_MEAN, TF_STD
    from deeplab_studio.ml.tflite_convert import ConvertError, convert_tflite
    from deeplab_studio.storage.atomic import atomic_write_text

    out = Path(args.out)
    card_path = out.with_suffix(".json")
    if out.suffix != ".safetensors":
        raise CommandError(f"--out {out}: the checkpoint must be a .safetensors file")
    ours = out.exists() and _ours(out)
    for path in (out, card_path):
        if path.exists() and not ours:
            raise CommandError(f"refusing to write over {path}: it is not a checkpoint that convert wrote")
    t = time.perf_counter()
    try:
        model, names, graph = convert_tflite(args.model, labels=args.labels)
    except ConvertError as exc:
        raise CommandError(str(exc)) from None
    except ImportError:
        raise CommandError("reading TFLite files needs the 'tflite' package: pip install 'deeplab-studio[convert]'") from None
    from deeplab_studio.core.labels import VOC_CLASSES, voc_colormap

    if names is None and model.num_classes == len(VOC_CLASSES):
        names = list(VOC_CLASSES)
    colors = voc_colormap(model.num_classes).tolist() if model.num_classes <= 256 else None
    if args.float16:
        model = model.half()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out, model, arch=model.arch, num_classes=model.num_classes, class_names=names,
                        class_colors=colors, output_stride=16, mean=TF_MEAN, std=TF_STD,
                        training={"converted_from": {"file": Path(args.model).name, "sha256": graph.sha256}})
        card = model_card(out, args, graph, names or [str(i) for i in range(model.num_classes)], model.arch)
        atomic_write_text(card_path, json.dumps(card, indent=1) + "\n")
    except OSError as exc:
        raise CommandError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    load_checkpoint(out)  # what was written loads back
    print(f"converted {args.model} ({model.arch}, {model.num_classes} classes) to {out} and {card_path.name} "
          f"in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return 0
