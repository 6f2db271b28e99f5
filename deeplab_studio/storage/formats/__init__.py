"""Dataset formats (Qt- and torch-free): one reader/writer pair per format, used by the CLI
(`import`, `export`, `train`, `evaluate`), the window's File → Import/Export and training alike,
so every reader decodes a dataset the same way. The contract is in `base`.

Each format module defines `READER` and `WRITER` (see `base.Reader`/`base.Writer`); this registry
names them in detection order (the most specific layout first).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from deeplab_studio.storage.formats.base import FormatError, Reader, Writer

#: registry name -> module (in detection order)
FORMATS: dict[str, str] = {
    "coco": "deeplab_studio.storage.formats.coco",
    "cvat-mask": "deeplab_studio.storage.formats.cvat_mask",
    "voc": "deeplab_studio.storage.formats.voc",
    "labelme": "deeplab_studio.storage.formats.labelme",
    "masks": "deeplab_studio.storage.formats.masks",
}


def reader(name: str) -> Reader:
    if name not in FORMATS:
        raise FormatError(f"unknown format {name!r} (known: {', '.join(FORMATS)})")
    return importlib.import_module(FORMATS[name]).READER


def writer(name: str) -> Writer:
    if name not in FORMATS:
        raise FormatError(f"unknown format {name!r} (known: {', '.join(FORMATS)})")
    return importlib.import_module(FORMATS[name]).WRITER


def detect(path: str | Path) -> str:
    """The name of the first format whose reader recognises `path`; FormatError when none does."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder")
    for name in FORMATS:
        if reader(name).detect(path):
            return name
    raise FormatError(f"{path}: not a dataset this app reads (tried {', '.join(FORMATS)}); "
                      "give --format to say which it is")
