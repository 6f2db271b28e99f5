"""CVAT's "Segmentation mask 1.1" (an unzipped export or import archive): a VOC layout with
`ImageSets/Segmentation/default.txt`, `labelmap.txt` colours and colour (RGB) masks.

```
ROOT/labelmap.txt                          name:r,g,b:: per label (background first), void declared
ROOT/ImageSets/Segmentation/default.txt    one id per line; ids keep the task's subfolders (a/b)
ROOT/SegmentationClass/<id>.png            RGB: pixel = its label's colour
ROOT/JPEGImages/<id>.<ext>                 the images (CVAT writes them with "Save images")
```

Reading is the VOC reader's (`formats.voc`), with `default.txt` as the split. Writing gives what
CVAT's importer (Datumaro's `voc` format) reads back: colour masks, so every class needs its own
colour (refused otherwise); the void colour (224,224,192) is declared as `ignored`; images keep
their own format when they are upright (EXIF-rotated ones are written upright, JPEG or PNG).
No SegmentationObject/: CVAT reads class masks alone as one mask per class.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from deeplab_studio.core.labels import LabelSet
from deeplab_studio.storage.formats.base import ExportItem, FormatError, Progress, SourceDataset
from deeplab_studio.storage.formats.mask_files import check_colours, colour_png, write_bytes, write_pairs
from deeplab_studio.storage.formats.voc import read_voc_layout
from deeplab_studio.storage.voc_format import CLASS_DIR, JPEG_DIR, LABELMAP_FILE, SPLIT_DIR, labelmap_text

SPLIT = "default"


def _root(path: Path) -> Path | None:
    """`path` itself or its one subfolder (an archive unzipped into a folder of its own)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return None
    subs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for cand in [path, *(subs if len(subs) == 1 else [])]:
        if (cand / SPLIT_DIR / f"{SPLIT}.txt").is_file() and (cand / CLASS_DIR).is_dir():
            return cand.resolve()
    return None


class CvatMaskReader:
    name = "cvat-mask"
    title = 'CVAT "Segmentation mask 1.1"'

    def detect(self, path: Path) -> bool:
        return _root(path) is not None

    def read(self, path: Path, split: str | None = None) -> SourceDataset:
        root = _root(path)
        if root is None:
            if not Path(path).exists():
                raise FormatError(f"{path}: no such folder")
            raise FormatError(f"{path}: not a CVAT segmentation-mask export (no {SPLIT_DIR.as_posix()}/{SPLIT}.txt "
                              f"and {CLASS_DIR}/ here); unzip the archive and give its folder")
        if not (root / JPEG_DIR).is_dir():
            raise FormatError(f"{root}: the export holds no images ({JPEG_DIR}/); export from CVAT with "
                              "'Save images' to import it")
        return read_voc_layout(root, self.name, split, SPLIT)


class CvatMaskWriter:
    name = "cvat-mask"
    title = 'CVAT "Segmentation mask 1.1"'

    def write(self, stage: Path, items: Iterable[ExportItem], labels: LabelSet, *,
              progress: Progress | None = None) -> list[tuple[str, str]]:
        check_colours(labels, "CVAT's mask format")
        done, failed = write_pairs(stage, items, labels, image_dir=JPEG_DIR, mask_dir=CLASS_DIR,
                                   encode=colour_png, jpeg_only=False, progress=progress)
        write_bytes(stage / SPLIT_DIR / f"{SPLIT}.txt", "".join(f"{i}\n" for i in sorted(done)))
        write_bytes(stage / LABELMAP_FILE, labelmap_text(labels))
        return failed


READER = CvatMaskReader()
WRITER = CvatMaskWriter()
