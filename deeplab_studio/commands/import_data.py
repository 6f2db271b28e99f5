"""`deeplab-studio import SRC --into PROJECT`: a dataset in any format this app reads into a project.

The format is detected (`--format auto`; the first line of the report says which) or given. Images are
copied into PROJECT, label maps saved as `reviewed`; classes are matched by name and unknown ones
added, or mapped by `--classes FILE`. Files that fail are named on stderr and skipped (exit
status 1); bad input is one line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys

FORMAT_CHOICES = ("auto", "voc", "cvat-mask", "labelme", "coco", "masks")

CLASSES_HELP = ("a file mapping the dataset's class names onto the project's, one 'dataset name = project name' "
                "a line ('#' starts a comment; '(void)' as the project name makes those pixels void). Names are "
                "matched ignoring case, spaces, '/', '-' and '_'; classes neither mapped nor in the project are "
                "added as new classes")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `import` and `import-voc` share."""
    parser.add_argument("--into", required=True, metavar="PROJECT",
                        help="project folder to copy the images into (created if missing)")
    parser.add_argument("--classes", default=None, metavar="FILE", help=CLASSES_HELP)
    parser.add_argument("--split", default=None, metavar="S",
                        help="voc, cvat-mask: the ImageSets/Segmentation/S.txt to import (default: trainval.txt, "
                             "else every split file there, else every mask)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace label maps a human already edited or reviewed in PROJECT")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC",
                        help="the dataset: a VOC folder (or one holding VOCdevkit/VOC2012), an unzipped CVAT "
                             "'Segmentation mask 1.1' export, a labelme/X-AnyLabeling folder, a COCO JSON (or its "
                             "folder), or a folder with images/ and masks/")
    parser.add_argument("--format", choices=FORMAT_CHOICES, default="auto",
                        help="the dataset's format (default auto: detected, and said which)")
    add_source_arguments(parser)


def report(summary, into: str) -> int:
    """Print an import's failures (stderr) and summary (stdout); the exit status."""
    from deeplab_studio.storage.voc_format import shown

    s = summary
    for _key, reason in s.failed:
        print(f"failed: {shown(reason)}", file=sys.stderr)
    for rel in s.conflicts:
        print(f"warning: {shown(rel)}: kept the project's edited label map (use --overwrite to replace it)",
              file=sys.stderr)
    for name in (s.plan.unused if s.plan else []):
        print(f"warning: --classes: no class {name!r} in the dataset", file=sys.stderr)
    where = f"{s.split}, " if s.split else ""
    notes = list(s.notes)
    head = notes.pop(0)[len("format: "):] if notes and notes[0].startswith("format: ") else s.format
    print(f"read {shown(s.root)} as {head}" + "".join(f"; {shown(n)}" for n in notes))
    print(f"imported {s.imported} label maps from {shown(s.root)} ({where}{len(s.classes)} classes) into "
          f"{shown(into)}: {s.copied} images copied, {s.identical} already there"
          + (f", {s.unchanged} unchanged" if s.unchanged else "")
          + (f", {len(s.renamed)} stored under a new name" if s.renamed else "")
          + (f", {len(s.conflicts)} conflicts kept" if s.conflicts else "")
          + (f", {s.rotated} masks turned with their image's EXIF orientation" if s.rotated else "")
          + (f", {len(s.failed)} failed (named above, skipped)" if s.failed else ""))
    if s.plan is not None:
        print(s.plan.summary())
    return 1 if s.failed else 0


def import_from(args: argparse.Namespace, fmt: str) -> int:
    from deeplab_studio.commands import CommandError
    from deeplab_studio.commands.export import progress_printer
    from deeplab_studio.storage.formats import open_dataset
    from deeplab_studio.storage.formats.base import FormatError
    from deeplab_studio.storage.formats.project_import import import_dataset
    from deeplab_studio.storage.images import ImageReadError
    from deeplab_studio.storage.project import ProjectError
    from deeplab_studio.storage.voc_format import shown

    try:
        source = open_dataset(args.src, fmt, split=args.split)
        summary = import_dataset(source, args.into, classes_file=args.classes, overwrite=args.overwrite,
                                 progress=progress_printer("importing"))
    except (FormatError, ProjectError, ImageReadError, OSError) as exc:
        raise CommandError(shown(exc)) from None
    return report(summary, args.into)


def run(args: argparse.Namespace) -> int:
    return import_from(args, args.format)
