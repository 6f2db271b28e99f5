"""`deeplab-studio export FOLDER --out OUT`: a project as a Pascal VOC segmentation dataset.

By default the dataset is written to `OUT/VOCdevkit/VOC2012`, so
`torchvision.datasets.VOCSegmentation(root=OUT, year="2012", image_set=...)` reads it unchanged;
`--flat` writes JPEGImages/, SegmentationClass/... straight into OUT. An export of another
project is replaced only with `--overwrite-other`. Images that fail are named on stderr and left
out (exit status 1); a refused target or bad input is one line, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="image folder of the project to export")
    parser.add_argument("--out", required=True, metavar="OUT",
                        help="destination: the dataset goes to OUT/VOCdevkit/VOC2012 (torchvision's "
                             "VOCSegmentation(root=OUT, year='2012')); that folder must be new, empty, or a "
                             "previous export of this project")
    parser.add_argument("--flat", action="store_true",
                        help="write JPEGImages/, SegmentationClass/, ImageSets/... directly into OUT (no "
                             "VOCdevkit/VOC2012); OUT must be new, empty, or a previous flat export of this project")
    parser.add_argument("--overwrite-other", action="store_true",
                        help="replace a folder that holds another project's export (refused without it)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of images in val.txt (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default 0)")
    parser.add_argument("--status", default="reviewed,edited,auto",
                        help="comma-separated statuses to include (default reviewed,edited,auto)")
    parser.add_argument("--objects", action="store_true",
                        help="also write SegmentationObject/ (connected components per class)")


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


def run(args: argparse.Namespace) -> int:
    from deeplab_studio.commands import CommandError
    from deeplab_studio.storage.images import ImageReadError
    from deeplab_studio.storage.project import Project, ProjectError, existing_data_dir
    from deeplab_studio.storage.voc import ForeignExportError, VOCError, export_voc, parse_statuses
    from deeplab_studio.storage.voc_format import shown

    try:
        statuses = parse_statuses(s for s in args.status.split(",") if s.strip())
    except ValueError as exc:
        raise CommandError(f"--status: {exc}") from None
    if not 0.0 <= args.val_fraction < 1.0:
        raise CommandError(f"--val-fraction must be in [0, 1), not {args.val_fraction}")
    if not os.path.isdir(args.folder):
        raise CommandError(f"{shown(args.folder)}: no such folder")
    if existing_data_dir(args.folder) is None:
        raise CommandError(f"{shown(args.folder)}: no DeepLab Studio project here (nothing annotated to export)")
    try:
        project = Project.open(args.folder, read_only=True)  # exporting changes nothing in the project
        for p in project.problems:
            print(f"warning: {shown(p.message)}", file=sys.stderr)
        summary = export_voc(project, args.out, val_fraction=args.val_fraction, seed=args.seed,
                             statuses=statuses, objects=args.objects, progress=progress_printer("exporting"),
                             layout="flat" if args.flat else "devkit", replace_other=args.overwrite_other)
    except ForeignExportError as exc:
        raise CommandError(f"{shown(exc)} (--overwrite-other replaces it)") from None
    except (ProjectError, VOCError, ImageReadError, OSError) as exc:
        raise CommandError(shown(exc)) from None
    for _path, reason in summary.failed:
        print(f"failed: {reason}", file=sys.stderr)
    skipped = ", ".join(f"{n} {s}" for s, n in sorted(summary.skipped.items()))
    print(f"exported {len(summary.ids)} images ({len(summary.train)} train, {len(summary.val)} val, "
          f"{summary.num_classes} classes) to {shown(summary.out_dir)} in {summary.seconds:.1f} s; "
          f"{summary.jpegs_copied} JPEGs copied, {summary.images_converted} converted"
          + (f"; {len(summary.failed)} failed (named above, left out)" if summary.failed else "")
          + (f"; left out: {skipped}" if skipped else "")
          + (f"; {summary.objects_dropped} objects beyond 254 written as void" if summary.objects_dropped else ""))
    if summary.layout == "devkit":
        print(f'torchvision: VOCSegmentation(root={str(summary.destination)!r}, year="2012", image_set="train")')
    return 1 if summary.failed else 0
