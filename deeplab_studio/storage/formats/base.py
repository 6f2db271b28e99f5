"""The contract every dataset format implements: a reader that turns a folder (or file) into a
`SourceDataset`, and a writer that writes label maps into an empty staging folder.

One rule for all readers: **labels are in the frame of the image as the window shows it** — EXIF
orientation applied to the image, and masks/coordinates given in that frame. Mask formats whose
masks are stored in the file's raw pixel frame (VOC, CVAT, mask folders: their tools ignore EXIF)
are rotated with the image; coordinate formats (labelme, COCO) are drawn in the displayed frame,
because their tools show the image EXIF-rotated. `read_labels()` returns uint8 H×W in the
dataset's own class numbering (`class_names`), 255 = void/ignore, 0 = background when the
dataset has one.

Readers never raise for one bad file: they record `(file, reason)` in `problems` (or raise
`FormatError` from that item's `read_labels`) and go on; a whole dataset they cannot read at all
is a `FormatError` naming the path. `file` is the item's key when the problem is about a listed
item, else the file's path relative to the dataset. `read_labels` must pickle (training's loader
processes call it): a module-level function, a `functools.partial` of one, or a small dataclass
with `__call__`; never a lambda or a closure.

Writers get items one by one and the class list, write into a fresh folder the caller created
(the caller swaps it into place atomically and re-reads it with the format's own reader to check
it), and return the failures. An item is written under `export_stems(keys)[key]` (its relative
path without the extension, made unique), so the check finds it again by that key. A writer may
declare `tolerance` (the share of an image's pixels that may differ after the round trip, e.g.
polygon edges; default 0) and `keeps_void = False` (void pixels are not written; default True).
Writers call `progress` once per item, outside their per-item error handling: the caller's
progress hook raises `Cancelled` there to stop the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from deeplab_studio.core.cancel import Cancel, is_cancelled  # noqa: F401  (re-exported: the formats import them here)
from deeplab_studio.core.labels import LabelSet

Progress = Callable[[int, int, str], None]  # (done, total, current item)


class FormatError(Exception):
    """A dataset, file or shape a format cannot read; the message names the file (and the shape)."""


class Cancelled(Exception):
    """The cancel hook asked to stop: what the run had written was removed again."""


def unique_names(wanted: Iterable[tuple[str, str]]) -> dict[str, str]:
    """key → name for `(key, wanted name)` pairs, in order: a name already given (also
    case-insensitively) gets `_2`, `_3`... appended."""
    used: set[str] = set()
    out: dict[str, str] = {}
    for key, base in wanted:
        cand, n = base, 2
        while cand.casefold() in used:
            cand, n = f"{base}_{n}", n + 1
        used.add(cand.casefold())
        out[key] = cand
    return out


def _path_stem(key: str) -> str:
    """`key` without the extension of its file name (a leading dot is no extension)."""
    name = key.rsplit("/", 1)[-1]
    return key[: len(key) - len(name)] + (name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name)


def export_stems(keys: Iterable[str]) -> dict[str, str]:
    """Each relative image path → the name its item is written under: the path without its
    extension, `_2`, `_3`... appended where two would clash (also case-insensitively)."""
    return unique_names((key, _path_stem(key)) for key in keys)


@dataclass
class SourceItem:
    key: str  # the item's id in the dataset: a relative path without extension, "/" for subfolders
    image: Path  # the image file
    read_labels: Callable[[], np.ndarray]  # uint8 H×W, dataset numbering, displayed frame; may raise FormatError
    subset: str = ""  # the dataset's own split of this item ("train", "val", "default"...), when it has one


@dataclass
class SourceDataset:
    format: str  # the registry name: "voc", "cvat-mask", "labelme", "coco", "masks"
    root: Path
    class_names: list[str]  # label value i means class_names[i]
    colors: list[tuple[int, int, int]] | None  # the dataset's colours, when it has them
    items: list[SourceItem]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): skipped while reading
    notes: list[str] = field(default_factory=list)  # what the reader decided (e.g. "split: train.txt")
    classes_declared: bool = True  # False: the dataset names no classes, `class_names` are a default


@dataclass
class ExportItem:
    key: str  # the image's path relative to the project folder ("/" separators, extension included)
    image: Path  # the source image file (unchanged)
    labels: Callable[[], np.ndarray]  # uint8 H×W in the project's numbering, displayed frame, 255 = void
    size: tuple[int, int]  # (width, height) as displayed


class Reader(Protocol):
    name: str
    title: str  # for menus and messages, e.g. "labelme / X-AnyLabeling JSON"

    def detect(self, path: Path) -> bool:
        """True when `path` looks like a dataset of this format (cheap: names and headers only)."""

    def read(self, path: Path) -> SourceDataset:
        """Index the dataset at `path`; FormatError when nothing of it can be read."""


class Writer(Protocol):
    name: str
    title: str

    def write(self, stage: Path, items: Iterable[ExportItem], labels: LabelSet, *,
              progress: Progress | None = None) -> list[tuple[str, str]]:
        """Write `items` into the empty folder `stage`; returns (key, reason) of items that failed."""
