"""`deeplab-studio export FOLDER --out OUT [--format F]`: a project as a segmentation dataset.

`--format voc` (the default): the dataset is written to `OUT/VOCdevkit/VOC2012`, so
`torchvision.datasets.VOCSegmentation(root=OUT, year="2012", image_set=...)` reads it unchanged;
`--flat` writes JPEGImages/, SegmentationClass/... straight into OUT. The other formats
(cvat-mask, labelme, coco, masks) are written straight into OUT, through the same staging,
marker and swap, and re-read by their own reader before they replace anything. An export of
another project is replaced only with `--overwrite-other`. Images that fail are named on stderr
and left out (exit status 1); a refused target or bad input is one line, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any


EXPORT_FORMATS = ("voc", "cvat-mask", "labelme", "coco", "masks")
_VOC_ONLY = ("flat", "val_fraction", "seed", "objects")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="image folder of the project to export")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="voc",
                        help="voc (default), cvat-mask (CVAT 'Segmentation mask 1.1'), labelme (JSON per image), "
                             "coco (instances JSON), masks (images/ + masks/ index PNGs + classes.txt)")
    parser.add_argument("--out", required=True, metavar="OUT",
                        help="destination: the dataset goes to OUT/VOCdevkit/VOC2012 (torchvision's "
                             "VOCSegmentation(root=OUT, year='2012')); that folder must be new, empty, or a "
                             "previous export of this project")
    parser.add_argument("--flat", action="store_true", default=None,
                        help="voc: write JPEGImages/, SegmentationClass/, ImageSets/... directly into OUT (no "
                             "VOCdevkit/VOC2012); OUT must be new, empty, or a previous flat export of this project")
    parser.add_argument("--overwrite-other", action="store_true",
                        help="replace a folder that holds another project's export (refused without it)")
    parser.add_argument("--val-fraction", type=float, default=None, help="voc: share of images in val.txt (default 0.2)")
    parser.add_argument("--seed", type=int, default=None, help="voc: seed of the train/val split (default 0)")
    parser.add_argument("--status", default="reviewed,edited,auto",
                        help="comma-separated statuses to include (default reviewed,edited,auto)")
    parser.add_argument("--objects", action="store_true", default=None,
                        help="voc: also write SegmentationObject/ (connected components per class)")


def progress_printer(verb: str) -> Callable[[int, int, str], None]:
    """A progress callback printing to stderr: one updating line on a terminal, else ~10 lines."""
    from deeplab_studio.storage.voc_format import shown

    tty = sys.stderr.isatty()
    last = [-1]

    def report(done: int, total: int, what: str) -> None:
        what = shown(what)
        if tty:
            end = "\n" if done >= total else ""
            print(f"\r{verb} {done}/{total} {what[:60]:<60}", end=end, file=sys.stderr, flush=True)
        else:
            step = max(total // 10, 1)
            if done >= total or done // step != last[0]:
                last[0] = done // step
                print(f"{verb} {done}/{total} {what}", file=sys.stderr, flush=True)

    return report


def open_project(folder: str):
    """The project of `folder`, read-only (exporting changes nothing); CommandError if there is none."""
    from deeplab_studio.commands import CommandError
    from deeplab_studio.storage.project import Project, existing_data_dir
    from deeplab_studio.storage.voc_format import shown

    if not os.path.isdir(folder):
        raise CommandError(f"{shown(folder)}: no such folder")
    if existing_data_dir(folder) is None:
        raise CommandError(f"{shown(folder)}: no DeepLab Studio project here (nothing annotated to export)")
    project = Project.open(folder, read_only=True)
    for p in project.problems:
        print(f"warning: {shown(p.message)}", file=sys.stderr)
    return project


def _export(folder: str, export: Callable[[Any], Any], errors: tuple[type[BaseException], ...]) -> Any:
    """`export(project)` on the project of `folder` and its summary, its failed images named on
    stderr; a refused target or one of `errors` is one CommandError line."""
    from deeplab_studio.commands import CommandError
    from deeplab_studio.storage.voc import ForeignExportError
    from deeplab_studio.storage.voc_format import shown

    try:
        project = open_project(folder)
        summary = export(project)
        project.close()
    except ForeignExportError as exc:
        raise CommandError(f"{shown(exc)} (--overwrite-other replaces it)") from None
    except errors as exc:
        raise CommandError(shown(exc)) from None
    for _path, reason in summary.failed:  # voc's reasons are shown() already: the same text
        print(f"failed: {shown(reason)}", file=sys.stderr)
    return summary


def _left_out(summary: Any) -> str:
    """The summary line's tail: how many images failed, and the statuses that were skipped."""
    skipped = ", ".join(f"{n} {st}" for st, n in sorted(summary.skipped.items()))
    return ((f"; {len(summary.failed)} failed (named above, left out)" if summary.failed else "")
            + (f"; left out: {skipped}" if skipped else ""))


def _export_other(args: argparse.Namespace, statuses) -> int:
    """Every format but voc: the generic export (staged, re-read by its reader, swapped in)."""
    from deeplab_studio.storage.formats.base import FormatError
    from deeplab_studio.storage.formats.project_export import export_dataset
    from deeplab_studio.storage.images import ImageReadError
    from deeplab_studio.storage.project import ProjectError
    from deeplab_studio.storage.voc_format import shown

    s = _export(args.folder, lambda project: export_dataset(
        project, args.out, args.format, statuses=statuses, replace_other=args.overwrite_other,
        progress=progress_printer("exporting")), (ProjectError, FormatError, ImageReadError, OSError, ValueError))
    print(f"exported {len(s.keys)} images ({s.num_classes} classes) as {s.format} to {shown(s.out_dir)} in "
          f"{s.seconds:.1f} s, checked by reading it back" + _left_out(s))
    return 1 if s.failed else 0


def run(args: argparse.Namespace) -> int:
    from deeplab_studio.commands import CommandError
    from deeplab_studio.storage.images import ImageReadError
    from deeplab_studio.storage.project import ProjectError
    from deeplab_studio.storage.voc import VOCError, export_voc, parse_statuses
    from deeplab_studio.storage.voc_format import shown

    try:
        statuses = parse_statuses(s for s in args.status.split(",") if s.strip())
    except ValueError as exc:
        raise CommandError(f"--status: {exc}") from None
    if args.format != "voc":
        given = [f"--{o.replace('_', '-')}" for o in _VOC_ONLY if getattr(args, o) is not None]
        if given:
            raise CommandError(f"{', '.join(given)}: options of --format voc only")
        return _export_other(args, statuses)
    args.val_fraction = 0.2 if args.val_fraction is None else args.val_fraction
    args.seed = 0 if args.seed is None else args.seed
    if not 0.0 <= args.val_fraction < 1.0:
        raise CommandError(f"--val-fraction must be in [0, 1), not {args.val_fraction}")
    summary = _export(args.folder, lambda project: export_voc(
        project, args.out, val_fraction=args.val_fraction, seed=args.seed, statuses=statuses,
        objects=bool(args.objects), progress=progress_printer("exporting"), layout="flat" if args.flat else "devkit",
        replace_other=args.overwrite_other), (ProjectError, VOCError, ImageReadError, OSError))
    print(f"exported {len(summary.ids)} images ({len(summary.train)} train, {len(summary.val)} val, "
          f"{summary.num_classes} classes) to {shown(summary.out_dir)} in {summary.seconds:.1f} s; "
          f"{summary.jpegs_copied} JPEGs copied, {summary.images_converted} converted" + _left_out(summary)
          + (f"; {summary.objects_dropped} objects beyond 254 written as void" if summary.objects_dropped else ""))
    if summary.layout == "devkit":
        print(f'torchvision: VOCSegmentation(root={str(summary.destination)!r}, year="2012", image_set="train")')
    return 1 if summary.failed else 0
