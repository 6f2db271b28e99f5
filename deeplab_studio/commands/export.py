"""`deeplab-studio export FOLDER --out VOC_DIR`: a project as a Pascal VOC segmentation dataset."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="image folder of the project to export")
    parser.add_argument("--out", required=True, metavar="VOC_DIR",
                        help="VOC root to write (JPEGImages/, SegmentationClass/, ImageSets/...); "
                             "must be new, empty, or a previous export")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of images in val.txt (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default 0)")
    parser.add_argument("--status", default="reviewed,edited,auto",
                        help="comma-separated statuses to include (default reviewed,edited,auto)")
    parser.add_argument("--objects", action="store_true",
                        help="also write SegmentationObject/ (connected components per class)")


def progress_printer(verb: str) -> Callable[[int, int, str], None]:
    """A progress callback printing to stderr: one updating line on a terminal, else ~10 lines."""
    tty = sys.stderr.isatty()
    last = [-1]

    def report(done: int, total: int, what: str) -> None:
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
    from deeplab_studio.cli import CommandError
    from deeplab_studio.storage.images import ImageReadError
    from deeplab_studio.storage.project import Project, ProjectError, existing_data_dir
    from deeplab_studio.storage.voc import VOCError, export_voc, parse_statuses

    try:
        statuses = parse_statuses(s for s in args.status.split(",") if s.strip())
    except ValueError as exc:
        raise CommandError(f"--status: {exc}") from None
    if not 0.0 <= args.val_fraction < 1.0:
        raise CommandError(f"--val-fraction must be in [0, 1), not {args.val_fraction}")
    if not os.path.isdir(args.folder):
        raise CommandError(f"{args.folder}: no such folder")
    if existing_data_dir(args.folder) is None:
        raise CommandError(f"{args.folder}: no DeepLab Studio project here (nothing annotated to export)")
    try:
        project = Project.open(args.folder)
        for p in project.problems:
            print(f"warning: {p.message}", file=sys.stderr)
        summary = export_voc(project, args.out, val_fraction=args.val_fraction, seed=args.seed,
                             statuses=statuses, objects=args.objects, progress=progress_printer("exporting"))
    except (ProjectError, VOCError, ImageReadError, OSError) as exc:
        raise CommandError(str(exc)) from None
    skipped = ", ".join(f"{n} {s}" for s, n in sorted(summary.skipped.items()))
    print(f"exported {len(summary.ids)} images ({len(summary.train)} train, {len(summary.val)} val, "
          f"{summary.num_classes} classes) to {summary.out_dir} in {summary.seconds:.1f} s; "
          f"{summary.jpegs_copied} JPEGs copied, {summary.images_converted} converted"
          + (f"; left out: {skipped}" if skipped else "")
          + (f"; {summary.objects_dropped} objects beyond 254 written as void" if summary.objects_dropped else ""))
    return 0
