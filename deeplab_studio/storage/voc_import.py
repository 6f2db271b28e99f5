"""Pascal VOC import: a VOC folder (ours, the original devkit, Datumaro's or CVAT's) into a project.

The VOC reader (`formats.voc`: any split file, labelmap/dataset_meta colours, subfolder ids)
followed by the generic import (`formats.project_import`: images copied byte for byte, label maps
saved `reviewed` with a full edit mask, classes matched by name, failures listed per file, nothing
left behind on a whole-run failure). Kept as the VOC entry point of older callers; errors are
`VOCError`.
"""

from __future__ import annotations

from pathlib import Path

from deeplab_studio.storage.formats.base import Cancel, Cancelled, FormatError, Progress
from deeplab_studio.storage.formats.project_import import ImportSummary, import_dataset
from deeplab_studio.storage.formats.voc import READER
from deeplab_studio.storage.voc_format import VOCError

__all__ = ["ImportSummary", "import_voc"]


def import_voc(voc_dir: str | Path, into_folder: str | Path, *, split: str | None = None,
               progress: Progress | None = None, overwrite: bool = False, data_dir: str | Path | None = None,
               classes_file: str | Path | None = None, cancel: Cancel = None) -> ImportSummary:
    """Import split `split` (None: trainval, else every split file, else every mask) of the VOC
    dataset at `voc_dir` into the project of `into_folder` (created if missing). Human-edited
    label maps already there are kept unless `overwrite`."""
    try:
        source = READER.read(Path(voc_dir), split=split)
        return import_dataset(source, into_folder, classes_file=classes_file, overwrite=overwrite,
                              progress=progress, cancel=cancel, data_dir=data_dir)
    except (VOCError, Cancelled):
        raise
    except FormatError as exc:
        raise VOCError(str(exc)) from None
