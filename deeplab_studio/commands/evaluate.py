"""`deeplab-studio evaluate`: mIoU of a model on a Pascal VOC split.

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
from deeplab_studio.commands.predict import Progress, add_model_arguments, load_predictor, plural


def find_voc_root(folder: Path) -> Path:
    """The folder holding ImageSets/Segmentation: `folder`, `folder/VOC2012` or `folder/VOCdevkit/VOC2012`."""
    for root in (folder, folder / "VOC2012", folder / "VOCdevkit" / "VOC2012"):
        if (root / "ImageSets" / "Segmentation").is_dir():
            return root
    raise CommandError(f"{folder}: not a VOC folder (no ImageSets/Segmentation here, in VOC2012/ or VOCdevkit/VOC2012/)")


def read_split(root: Path, split: str) -> list[str]:
    sets = root / "ImageSets" / "Segmentation"
    path = sets / f"{split}.txt"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in sets.glob("*.txt"))) or "none"
        raise CommandError(f"{path}: no such split file (splits here: {have})")
    try:
        ids = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read the split file ({exc})") from None
    if not ids:
        raise CommandError(f"{path}: the split lists no images")
    return ids


def class_names_for(predictor, num_classes: int) -> list[str]:
    from deeplab_studio.core.labels import VOC_CLASSES

    names = predictor.class_names
    if names and len(names) == num_classes:
        return list(names)
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class {i}" for i in range(num_classes)]


def class_name_warning(root: Path, model_names) -> str | None:
    """A warning when the dataset's class_names.txt (written by `export`) disagrees with the model's
    classes: indices would be compared across different class lists, so the mIoU means nothing."""
    path = root / "class_names.txt"
    if not model_names or not path.is_file():
        return None
    try:
        data_names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    if [n.lower() for n in data_names] == [n.lower() for n in model_names]:
        return None
    def show(names):
        return ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
    return (f"the model's classes ({show(list(model_names))}) differ from {path}'s ({show(data_names)}); "
            "class indices are compared as they are, so per-class IoU and mIoU may mean nothing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("voc_dir", metavar="VOC_DIR", help="VOC root (or a folder with VOCdevkit/VOC2012 inside)")
    parser.add_argument("--split", default="val", help="ImageSets/Segmentation/<split>.txt (default val)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_model_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="report only failures and the summary")


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def run(args: argparse.Namespace) -> int:
    root = find_voc_root(Path(args.voc_dir))
    ids = read_split(root, args.split)

    from deeplab_studio.core.metrics import ConfusionMatrix
    from deeplab_studio.ml.prefetch import prefetch_images
    from deeplab_studio.storage.images import ImageReadError, read_image
    from deeplab_studio.storage.labelmaps import read_label_png

    predictor = load_predictor(args, keep_probs=args.crf,
                               on_warning=lambda m: print(f"warning: {m}", file=sys.stderr, flush=True))
    refine = None
    if args.crf:  # the model card's CRF setting (ml.crf.model_crf), else the defaults
        from deeplab_studio.ml.crf import model_crf

        try:
            refine = model_crf(args.model)
        except ValueError as exc:
            raise CommandError(f"{args.model}: {exc}") from None

    def image_path(image_id: str) -> Path:
        path = root / "JPEGImages" / f"{image_id}.jpg"
        if not path.exists():
            others = sorted((root / "JPEGImages").glob(f"{image_id}.*"))
            path = others[0] if others else path
        return path

    def read_pair(path: Path):
        gt_path = root / "SegmentationClass" / f"{path.stem}.png"
        if not gt_path.is_file():
            raise ImageReadError(gt_path, "ground-truth label map not found")
        image, gt = read_image(path), read_label_png(gt_path)
        if image.shape[:2] != gt.shape:
            raise ImageReadError(gt_path, f"size {gt.shape[1]}×{gt.shape[0]} differs from the image's "
                                          f"{image.shape[1]}×{image.shape[0]}")
        return image, gt

    warnings = [w for w in [class_name_warning(root, predictor.class_names)] if w]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr, flush=True)

    cm: ConfusionMatrix | None = None
    failed: list[dict[str, str]] = []
    progress = Progress(len(ids), quiet=args.quiet)
    print(f"evaluating {plural(len(ids), 'image')} of {root} [{args.split}] on {predictor.device}", file=sys.stderr, flush=True)
    paths = [image_path(i) for i in ids]
    for path, item in prefetch_images(paths, workers=args.decode_workers, read=read_pair):
        if isinstance(item, Exception):
            failed.append({"id": path.stem, "error": str(item)})
            progress.step(path, item)
            continue
        try:
            image, gt = item
            pred = predictor.predict(image, progress=progress.tiles(path))
            labels = refine(image, pred.probs) if refine is not None else pred.labels
            if cm is None:
                cm = ConfusionMatrix(pred.num_classes or predictor.num_classes or int(labels.max()) + 1)
            cm.update(gt, labels)
        except (ValueError, RuntimeError, OSError) as exc:
            failed.append({"id": path.stem, "error": str(exc)})
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
        "voc_root": str(root),
        "split": args.split,
        "images": len(ids) - len(failed),
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
