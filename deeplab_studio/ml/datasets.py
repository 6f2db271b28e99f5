"""Training data: samples from a project, a dataset reader's items, a VOC folder or arrays, split
into train/val, as torch Datasets.

A ``Sample`` holds an image and a label map, each an array or a file path (project label maps:
PNG bytes read once from the project), decoded lazily in the DataLoader workers. Files are read
by the functions the caller hands in (``read_image``, ``read_labels``: the application's one safe
decoder, ``storage.images.read_image`` and ``storage.labelmaps.read_label_png``); this module
never opens an image itself, so training sees exactly what inference and the editor see. Loader
processes started by *spawn* pickle the samples: the readers must then be module-level functions.
``TrainData`` is the split plus the class list. ``SegmentationDataset`` applies the seeded
augmentation of ``augment.py``; the ``EpochSampler`` (``samplers.py``, re-exported here) hands
it ``(index, seed)`` keys, so every epoch is reproducible from ``(seed, epoch)`` no matter how
many workers run, and a resumed run can start mid-epoch.

Images cross the loader as uint8 CHW tensors (4× less to copy than float); the training loop
normalises on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from deeplab_studio.core.labels import IGNORE, VOC_CLASSES
from deeplab_studio.ml.augment import AugmentParams, augment

from .errors import DatasetError  # (also imported from here)
from .samplers import EpochSampler  # noqa: F401 (lives in samplers; also imported from here)

TRAINABLE_STATUSES = ("edited", "reviewed")

#: an image file → uint8 H×W×3 RGB (raises naming the file when it cannot be used)
ImageReader = Callable[[Path], np.ndarray]
#: a label-map file → uint8 H×W class indices (raises naming the file when it cannot be used)
LabelReader = Callable[[Path], np.ndarray]


@dataclass
class Sample:
    """One image and its label map: arrays, or file paths with the readers that decode them;
    labels may also be PNG-encoded bytes (decoded here, no reader needed)."""

    image: np.ndarray | str | Path
    labels: np.ndarray | str | Path | bytes
    name: str = ""
    read_image: ImageReader | None = None
    read_labels: LabelReader | None = None


@dataclass
class TrainData:
    """A train/val split with its class list and a one-line description of where it came from."""

    train: list[Sample]
    val: list[Sample]
    class_names: list[str]
    class_colors: list[tuple[int, int, int]] | None = None
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --- reading -------------------------------------------------------------------------------
def _read(reader: Callable[[Path], np.ndarray] | None, path: str | Path, what: str) -> np.ndarray:
    """``reader(path)``; whatever it raises becomes a DatasetError naming the file (one line, and
    a type the loader can re-raise in the main process)."""
    if reader is None:
        raise DatasetError(f"{path}: no {what} reader given for this file")
    try:
        return reader(Path(path))
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - the reader is the caller's; its errors name the file
        raise DatasetError(f"{path}: cannot read {what} ({getattr(exc, 'reason', None) or exc})") from None


def load_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """The sample's (image, labels) arrays, checked to be the same size."""
    image = sample.image if isinstance(sample.image, np.ndarray) else _read(sample.read_image, sample.image, "image")
    lab = sample.labels
    if isinstance(lab, np.ndarray):
        labels = lab
    elif isinstance(lab, bytes):
        labels = cv2.imdecode(np.frombuffer(lab, np.uint8), cv2.IMREAD_UNCHANGED)
    else:
        labels = _read(sample.read_labels, lab, "label map")
    if labels.shape != image.shape[:2]:
        raise DatasetError(f"{sample.name or sample.image}: label map {labels.shape[::-1]} "
                           f"does not match the image size {image.shape[1::-1]}")
    return image, labels


# --- splits --------------------------------------------------------------------------------
def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded shuffle split: at least one validation item and one training item when n >= 2."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = 0 if val_fraction == 0 or n < 2 else min(n - 1, max(1, round(n * val_fraction)))
    return sorted(order[n_val:]), sorted(order[:n_val])


def from_arrays(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray], class_names: Sequence[str], *,
    val_fraction: float = 0.2, seed: int = 0, class_colors=None, source: str = "arrays",
) -> TrainData:
    """In-memory (image, labels) pairs split by ``val_fraction``."""
    if len(images) != len(labels):
        raise DatasetError(f"{len(images)} images but {len(labels)} label maps")
    samples = [Sample(np.asarray(i), np.asarray(lb, dtype=np.uint8), f"#{k}")
               for k, (i, lb) in enumerate(zip(images, labels))]
    tr, va = split_indices(len(samples), val_fraction, seed)
    return TrainData([samples[i] for i in tr], [samples[i] for i in va], list(class_names),
                     class_colors, f"{source} ({len(samples)} images)")


def encode_labels(labels: np.ndarray) -> bytes:
    """A label map as PNG bytes (label maps compress tens of times; decoded in the loader)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(labels, dtype=np.uint8))
    if not ok:
        raise DatasetError("cannot encode a label map")
    return buf.tobytes()


def _status(record: Any) -> str:
    s = record.status
    return str(getattr(s, "value", s))


class _ProjectImages:
    """The project's own image reader (``project.read_image(record)``) looked up by file path.

    It holds the open project, which cannot be pickled: loader processes started by *spawn*
    need a module-level ``read_image`` handed to ``from_project`` instead."""

    def __init__(self, project: Any, records: Sequence[Any]) -> None:
        self.project = project
        self.records = {Path(project.image_path(r)): r for r in records}

    def __call__(self, path: Path) -> np.ndarray:
        return self.project.read_image(self.records[Path(path)])

    def __getstate__(self) -> dict[str, Any]:
        raise DatasetError("loader processes started by spawn cannot use the open project's image reader; "
                           "pass read_image= (a module-level function) to from_project")


def from_project(
    project: Any, *, val_fraction: float = 0.2, seed: int = 0, edited_pixels_only: bool = False,
    read_image: ImageReader | None = None,
) -> TrainData:
    """The ``edited`` and ``reviewed`` images of an open ``storage.project.Project`` (duck-typed:
    ``records``, ``has_annotation``, ``load_annotation``, ``image_path``, ``read_image``,
    ``labels``, ``folder``).

    ``unlabeled`` and ``auto`` images (the model's own unreviewed proposals) are never used. With
    ``edited_pixels_only``, the unpainted pixels of ``edited`` images are ignored (255); reviewed
    images always count whole. Label maps are read here through ``project.load_annotation``;
    images later, in the loader, by ``read_image`` (default: the project's own ``read_image``).
    """
    records = [r for r in project.records if _status(r) in TRAINABLE_STATUSES and project.has_annotation(r)]
    if len(records) < 2:
        raise DatasetError(f"{project.folder}: training needs at least 2 edited or reviewed images, "
                           f"found {len(records)}")
    reader = read_image if read_image is not None else _ProjectImages(project, records)
    samples = []
    for r in records:  # label maps are read here, once, so loader workers never touch the project
        labels, edit_mask = project.load_annotation(r)
        labels = np.array(labels, dtype=np.uint8)
        if edited_pixels_only and _status(r) == "edited":
            labels[~np.asarray(edit_mask, bool)] = IGNORE
        samples.append(Sample(Path(project.image_path(r)), encode_labels(labels), r.path, read_image=reader))
    tr, va = split_indices(len(samples), val_fraction, seed)
    counts = {s: sum(_status(r) == s for r in records) for s in TRAINABLE_STATUSES}
    ls = project.labels
    return TrainData([samples[i] for i in tr], [samples[i] for i in va], list(ls.names),
                     [tuple(c) for c in ls.colors],
                     f"project {project.folder} ({counts['edited']} edited, {counts['reviewed']} reviewed)",
                     {"kind": "project", "folder": str(project.folder), **counts})


def find_voc_root(path: str | Path) -> Path | None:
    """The folder holding ``ImageSets/Segmentation`` at ``path``, ``path/VOC2012`` or
    ``path/VOCdevkit/VOC2012``; None if ``path`` is not a VOC dataset."""
    path = Path(path)
    for cand in (path, path / "VOC2012", path / "VOCdevkit" / "VOC2012"):
        if (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    return None


def _read_ids(path: Path) -> list[str]:
    try:
        ids = [ln.split()[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the split list ({exc})") from None
    for i in ids:
        if "/" in i or "\\" in i or i.startswith("."):
            raise DatasetError(f"{path}: unsafe image id {i!r}")
    return ids


def _read_lines(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the class list ({exc})") from None


_VOID_ENTRIES = {"ignored", "ignore", "void"}


def voc_classes(root: Path) -> tuple[list[str], list[tuple[int, int, int]] | None]:
    """Class names (and colours) of a VOC folder: ``labelmap.txt`` (``name:r,g,b::``, as CVAT
    and our export write it; its void entry ``ignored`` is no class), else ``class_names.txt``,
    else the 21 VOC classes."""
    names = colors = None
    lm = root / "labelmap.txt"
    if lm.is_file():
        names, colors = [], []
        for ln in _read_lines(lm):
            name, _, rest = ln.partition(":")
            try:
                rgb = tuple(int(v) for v in rest.split(":")[0].split(","))
            except ValueError:
                raise DatasetError(f"{lm}: bad line {ln!r} (expected name:r,g,b::)") from None
            if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise DatasetError(f"{lm}: bad colour in {ln!r}")
            if name.strip().casefold() in _VOID_ENTRIES:  # the void colour declared (our export, Datumaro)
                continue
            names.append(name.strip())
            colors.append(rgb)
    cn = root / "class_names.txt"
    if cn.is_file():
        listed = _read_lines(cn)
        if names is not None and listed != names:
            raise DatasetError(f"{root}: labelmap.txt and class_names.txt list different classes")
        names = listed
    if not names:
        return list(VOC_CLASSES), None
    return names, colors


def from_voc(path: str | Path, *, read_image: ImageReader, read_labels: LabelReader, val_fraction: float = 0.2,
             seed: int = 0) -> TrainData:
    """A Pascal VOC segmentation folder: ``train.txt``/``val.txt`` when both exist, else a seeded
    split of ``trainval.txt`` (or of every listed id but ``test.txt``). Classes: ``voc_classes``.
    Its files are read, in the loader, by ``read_image`` and ``read_labels`` (colour label PNGs
    are the reader's to map through the VOC colormap)."""
    root = find_voc_root(path)
    if root is None:
        raise DatasetError(f"{path}: not a VOC folder (no ImageSets/Segmentation)")
    sets = root / "ImageSets" / "Segmentation"

    def samples(ids: list[str]) -> list[Sample]:
        out = []
        for i in ids:
            img = root / "JPEGImages" / f"{i}.jpg"
            if not img.is_file():
                alts = sorted((root / "JPEGImages").glob(f"{i}.*"))
                img = alts[0] if alts else img
            lab = root / "SegmentationClass" / f"{i}.png"
            for p in (img, lab):
                if not p.is_file():
                    raise DatasetError(f"{p}: missing (listed in {sets})")
            out.append(Sample(img, lab, i, read_image=read_image, read_labels=read_labels))
        return out

    if (sets / "train.txt").is_file() and (sets / "val.txt").is_file():
        train, val = samples(_read_ids(sets / "train.txt")), samples(_read_ids(sets / "val.txt"))
        how = "train.txt/val.txt"
    else:
        lists = [sets / "trainval.txt"] if (sets / "trainval.txt").is_file() else \
            [f for f in sorted(sets.glob("*.txt")) if f.stem != "test"]
        ids = sorted({i for f in lists for i in _read_ids(f)})
        everything = samples(ids)
        tr, va = split_indices(len(everything), val_fraction, seed)
        train, val = [everything[i] for i in tr], [everything[i] for i in va]
        how = f"seeded split {val_fraction:g}"
    if not train:
        raise DatasetError(f"{sets}: no training images listed")
    names, colors = voc_classes(root)
    return TrainData(train, val, names, colors, f"VOC {root} ({len(train)} train, {len(val)} val, {how})",
                     {"kind": "voc", "folder": str(root)})


class ItemLabels:
    """``Sample.read_labels`` for a dataset reader's item: calls the item's own ``read_labels()``
    (picklable when that is, as storage's readers guarantee)."""

    def __init__(self, read: Callable[[], np.ndarray]) -> None:
        self.read = read

    def __call__(self, _path: Path) -> np.ndarray:
        return self.read()


def from_items(items: Sequence[Any], class_names: Sequence[str], class_colors=None, *, read_image: ImageReader,
               val_fraction: float = 0.2, seed: int = 0, source: str = "items", info: dict | None = None) -> TrainData:
    """Samples from a dataset reader's items (duck-typed: ``key``, ``image``, ``read_labels()``,
    ``subset``): the dataset's own train/val split when its items have both, else a seeded split
    by ``val_fraction``. Images are read by ``read_image`` and labels by the item, in the loader."""
    samples = [Sample(Path(it.image), it.key, it.key, read_image=read_image, read_labels=ItemLabels(it.read_labels))
               for it in items]
    if not samples:
        raise DatasetError(f"{source}: no images with label maps")
    subsets = [getattr(it, "subset", "") for it in items]
    if "train" in subsets and "val" in subsets:
        train = [s for s, sub in zip(samples, subsets) if sub != "val"]
        val = [s for s, sub in zip(samples, subsets) if sub == "val"]
        how = "the dataset's train/val split"
    else:
        tr, va = split_indices(len(samples), val_fraction, seed)
        train, val = [samples[i] for i in tr], [samples[i] for i in va]
        how = f"seeded split {val_fraction:g}"
    colors = [tuple(c) for c in class_colors] if class_colors else None
    return TrainData(train, val, list(class_names), colors, f"{source} ({len(train)} train, {len(val)} val, {how})",
                     dict(info or {}))


# --- torch datasets ------------------------------------------------------------------------
def _check_labels(labels: np.ndarray, num_classes: int, sample: Sample) -> None:
    valid = labels[labels != IGNORE]
    if valid.size and int(valid.max()) >= num_classes:
        raise DatasetError(f"{sample.name or sample.labels}: label {int(valid.max())} but only "
                           f"{num_classes} classes (0..{num_classes - 1}, 255 = ignore)")


class SegmentationDataset(Dataset):
    """Augmented training crops: key ``(index, seed)`` → (uint8 3×crop×crop, uint8 crop×crop)."""

    def __init__(self, samples: Sequence[Sample], num_classes: int, params: AugmentParams) -> None:
        self.samples, self.num_classes, self.params = list(samples), num_classes, params

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, key)
        sample = self.samples[index]
        image, labels = load_sample(sample)
        _check_labels(labels, self.num_classes, sample)
        img, lab = augment(image, labels, np.random.default_rng(seed), self.params)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), torch.from_numpy(lab)


class EvalDataset(Dataset):
    """Whole images for validation: index → (uint8 3×H×W, uint8 H×W)."""

    def __init__(self, samples: Sequence[Sample], num_classes: int) -> None:
        self.samples, self.num_classes = list(samples), num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = load_sample(self.samples[index])
        _check_labels(labels, self.num_classes, self.samples[index])
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.from_numpy(labels)
