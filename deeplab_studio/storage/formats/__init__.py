"""Dataset formats (Qt- and torch-free): one reader/writer pair per format, used by the CLI
(`import`, `export`, `train`, `evaluate`), the window's File → Import/Export and training alike,
so every reader decodes a dataset the same way. The contract is in `base`.

Each format module defines `READER` and `WRITER` (see `base.Reader`/`base.Writer`); this registry
names them in detection order (the most specific layout first).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from deeplab_studio.storage.formats.base import FormatError, Reader, SourceDataset, Writer

#: registry name -> module (in detection order)
FORMATS: dict[str, str] = {
    "coco": "deeplab_studio.storage.formats.coco",
    "cvat-mask": "deeplab_studio.storage.formats.cvat_mask",
    "voc": "deeplab_studio.storage.formats.voc",
    "labelme": "deeplab_studio.storage.formats.labelme",
    "masks": "deeplab_studio.storage.formats.masks",
}


#: formats that take `--split` (their readers' `read(path, split=...)`)
SPLIT_FORMATS = ("voc", "cvat-mask")


def _module(name: str) -> ModuleType:
    if name not in FORMATS:
        raise FormatError(f"unknown format {name!r} (known: {', '.join(FORMATS)})")
    try:
        return importlib.import_module(FORMATS[name])
    except ModuleNotFoundError as exc:
        if exc.name == FORMATS[name]:
            raise FormatError(f"the {name} format is not available in this build") from None
        raise FormatError(f"the {name} format cannot be loaded ({exc})") from None
    except ImportError as exc:
        raise FormatError(f"the {name} format cannot be loaded ({exc})") from None


def available() -> list[str]:
    """The registered formats whose module loads, in detection order (auto-detection tries these)."""
    out = []
    for name in FORMATS:
        try:
            _module(name)
        except FormatError:
            continue
        out.append(name)
    return out


def reader(name: str) -> Reader:
    return _module(name).READER


def writer(name: str) -> Writer:
    return _module(name).WRITER


def detect(path: str | Path) -> str:
    """The name of the first format whose reader recognises `path`; FormatError when none does."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder")
    names = available()
    for name in names:
        if reader(name).detect(path):
            return name
    raise FormatError(f"{path}: not a VOC folder (JPEGImages/ and SegmentationClass/) nor another dataset this app "
                      f"reads (tried {', '.join(names)}); give --format to say which it is")


def open_dataset(path: str | Path, fmt: str = "auto", *, split: str | None = None) -> SourceDataset:
    """Read the dataset at `path` with the reader `fmt` ("auto": the one `detect` finds; the
    dataset's `notes` then start with the choice). `split` only for `SPLIT_FORMATS`."""
    path = Path(path).expanduser()
    chosen = detect(path) if fmt == "auto" else fmt
    if split is not None and chosen not in SPLIT_FORMATS:
        raise FormatError(f"--split is for {' and '.join(SPLIT_FORMATS)} datasets; {path} is read as {chosen}")
    rd = reader(chosen)
    source = rd.read(path, split=split) if split is not None else rd.read(path)
    if fmt == "auto":
        source.notes.insert(0, f"format: {chosen} ({rd.title}), detected")
    return source
