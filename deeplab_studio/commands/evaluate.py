"""`deeplab-studio evaluate`: mIoU of a model on a dataset: a VOC split, CVAT masks, labelme, COCO
or images/ + masks/, read by the same readers as `import` and `train` (the same classes, colours
and EXIF rule). For VOC and CVAT masks, `--split` picks the split file (default: val.txt when
there is one, else all the dataset's items).

The model is `--model` (a bundled model's name, a checkpoint file, a Hugging Face folder or
`torchvision:NAME`) or, without it, the bundled Pascal VOC model `deeplabv3_mobilenetv2_voc`.

Accumulates one confusion matrix over the whole split (ground-truth 255 ignored) and prints
per-class IoU, mIoU and pixel accuracy; `--json` prints one object on stdout instead (progress
stays on stderr). An image that cannot be read is reported and left out; exit status 1 then.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from deeplab_studio.commands import CommandError
from deeplab_studio.commands.import_data import FORMAT_CHOICES
from deeplab_studio.commands.predict import add_model_arguments, load_predictor
from deeplab_studio.commands.predict_engine import Progress
from deeplab_studio.commands.predict_outputs import plural


def open_source(path: Path, fmt: str, split: str | None):
    """The dataset to evaluate (its `val` split by default, where it has one); CommandError if
    it cannot be read."""
    from deeplab_studio.storage.formats import SPLIT_FORMATS, detect, open_dataset, reader
    from deeplab_studio.storage.formats.base import FormatError
    from deeplab_studio.storage.voc_format import SPLIT_DIR

    try:
        chosen = detect(path) if fmt == "auto" else fmt
        source = open_dataset(path, chosen, split=split)
        if split is None and chosen in SPLIT_FORMATS and (source.root / SPLIT_DIR / "val.txt").is_file():
            source = reader(chosen).read(path, split="val")
    except FormatError as exc:
        raise CommandError(str(exc)) from None
    if not source.items and not source.problems:
        raise CommandError(f"{source.root}: nothing to evaluate ({'; '.join(source.notes)})")
    return source


def read_pair(item):
    """(image, ground truth) of a dataset item, as training reads them: storage's `read_image`
    (EXIF applied) and the item's own label reader (masks turned with their image)."""
    from deeplab_studio.storage.images import ImageReadError, read_image

    image, gt = read_image(item.image), item.read_labels()
    if image.shape[:2] != gt.shape:
        raise ImageReadError(item.image, f"its label map is {gt.shape[1]}×{gt.shape[0]}, the image "
                                         f"{image.shape[1]}×{image.shape[0]}")
    return image, gt


def class_names_for(predictor, num_classes: int) -> list[str]:
    from deeplab_studio.core.labels import VOC_CLASSES

    names = predictor.class_names
    if names and len(names) == num_classes:
        return list(names)
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class {i}" for i in range(num_classes)]


def declared_names(source) -> tuple[list[str] | None, str]:
    """The class names the dataset declares and where: a VOC folder's class_names.txt (what
    `export` writes for VainF and mmsegmentation), else the reader's classes when the dataset
    names them; (None, "") when it names none."""
    path = Path(source.root) / "class_names.txt"
    if source.format in ("voc", "cvat-mask") and path.is_file():
        try:
            return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()], str(path)
        except (OSError, UnicodeDecodeError):
            pass
    return (list(source.class_names), str(source.root)) if source.classes_declared else (None, "")


def class_name_warning(data_names: list[str] | None, where: str, model_names) -> str | None:
    """A warning when the dataset's class names disagree with the model's classes: indices would
    be compared across different class lists, so the mIoU means nothing."""
    if not model_names or not data_names:
        return None
    if [n.lower() for n in data_names] == [n.lower() for n in model_names]:
        return None

    def show(names):
        return ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
    return (f"the model's classes ({show(list(model_names))}) differ from {where}'s ({show(data_names)}); "
            "class indices are compared as they are, so per-class IoU and mIoU may mean nothing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA",
                        help="the dataset: a VOC root (or a folder with VOCdevkit/VOC2012 inside), CVAT masks, "
                             "labelme, COCO, or images/ + masks/")
    parser.add_argument("--format", choices=FORMAT_CHOICES, default="auto",
                        help="the dataset's format (default auto: detected)")
    parser.add_argument("--split", default=None,
                        help="voc, cvat-mask: ImageSets/Segmentation/<split>.txt (default: val when there is one, "
                             "else all items)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_model_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="report only failures and the summary")


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def run(args: argparse.Namespace) -> int:
    source = open_source(Path(args.data), args.format, args.split)

    from deeplab_studio.core.metrics import ConfusionMatrix
    from deeplab_studio.ml.prefetch import prefetch_images

    predictor = load_predictor(args, keep_probs=args.crf,
                               on_warning=lambda m: print(f"warning: {m}", file=sys.stderr, flush=True))
    refine = None
    if args.crf:  # the model card's CRF setting (ml.crf.model_crf), else the defaults
        from deeplab_studio.ml.crf import model_crf

        try:
            refine = model_crf(args.model)
        except ValueError as exc:
            raise CommandError(f"{args.model}: {exc}") from None

    warnings = [w for w in [class_name_warning(*declared_names(source), predictor.class_names)] if w]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr, flush=True)

    split = args.split or next((n.split(": ", 1)[1] for n in source.notes if n.startswith("split: ")), "all")
    items = {Path(it.image): it for it in source.items}
    total = len(items) + len(source.problems)
    cm: ConfusionMatrix | None = None
    failed: list[dict[str, str]] = []
    progress = Progress(total, quiet=args.quiet)
    print(f"evaluating {plural(total, 'image')} of {source.root} [{source.format}, {split}] on {predictor.device}",
          file=sys.stderr, flush=True)
    for name, why in source.problems:  # listed, but not readable: failures like any other
        failed.append({"id": name, "error": why})
        progress.step(Path(name), ValueError(why))
    for path, pair in prefetch_images(list(items), workers=args.decode_workers,
                                      read=lambda p: read_pair(items[p])):
        key = items[path].key
        if isinstance(pair, Exception):
            failed.append({"id": key, "error": str(pair)})
            progress.step(path, pair)
            continue
        try:
            image, gt = pair
            pred = predictor.predict(image, progress=progress.tiles(path))
            labels = refine(image, pred.probs) if refine is not None else pred.labels
            if cm is None:
                cm = ConfusionMatrix(pred.num_classes or predictor.num_classes or int(labels.max()) + 1)
            cm.update(gt, labels)
        except (ValueError, RuntimeError, OSError) as exc:
            failed.append({"id": key, "error": str(exc)})
            progress.step(path, exc)
            continue
        progress.step(path)
    print(progress.summary("evaluated"), file=sys.stderr, flush=True)

    num_classes = cm.num_classes if cm is not None else (predictor.num_classes or 1)
    cm = cm or ConfusionMatrix(num_classes)
    names = class_names_for(predictor, num_classes)
    ious = cm.iou()
    result = {
        "model": str(args.model),
        "voc_root": str(source.root),
        "format": source.format,
        "split": split,
        "images": total - len(failed),
        "failed": failed,
        "warnings": warnings,
        "crf": bool(args.crf),
        "tta": args.tta,
        "miou": _num(cm.miou()),
        "pixel_accuracy": _num(cm.pixel_accuracy()),
        "mean_class_accuracy": _num(cm.mean_class_accuracy()),
        "per_class_iou": {name: _num(v) for name, v in zip(names, ious)},
        "confusion_matrix": cm.matrix.tolist(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        width = max(12, *(len(n) for n in names))
        print(f"{'class':<{width}}  IoU")
        for name, v in zip(names, ious):
            print(f"{name:<{width}}  {'-' if math.isnan(v) else f'{v:.4f}'}")
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"mIoU {fmt(result['miou'])}   pixel accuracy {fmt(result['pixel_accuracy'])}   "
              f"mean class accuracy {fmt(result['mean_class_accuracy'])}   "
              f"({result['images']} images{f', {len(failed)} failed' if failed else ''})")
    return 1 if failed else 0
