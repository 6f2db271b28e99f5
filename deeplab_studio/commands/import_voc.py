"""`deeplab-studio import-voc VOC_DIR --into FOLDER`: a Pascal VOC dataset into a project.

Files that fail are named on stderr and skipped (exit status 1); bad input is one line, exit 2.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("voc_dir", metavar="VOC_DIR",
                        help="VOC root (with JPEGImages/, SegmentationClass/), or a folder holding "
                             "VOC2012/ or VOCdevkit/VOC2012/")
    parser.add_argument("--into", required=True, metavar="FOLDER",
                        help="project folder to copy the images into (created if missing)")
    parser.add_argument("--split", default="trainval", help="ImageSets/Segmentation split to import (default trainval)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace label maps a human already edited or reviewed in FOLDER")


def run(args: argparse.Namespace) -> int:
    from deeplab_studio.commands import CommandError
    from deeplab_studio.commands.export import progress_printer
    from deeplab_studio.storage.images import ImageReadError
    from deeplab_studio.storage.project import ProjectError
    from deeplab_studio.storage.voc import VOCError, import_voc
    from deeplab_studio.storage.voc_format import shown

    try:
        s = import_voc(args.voc_dir, args.into, split=args.split, overwrite=args.overwrite,
                       progress=progress_printer("importing"))
    except (ProjectError, VOCError, ImageReadError, OSError) as exc:
        raise CommandError(shown(exc)) from None
    for _voc_id, reason in s.failed:
        print(f"failed: {reason}", file=sys.stderr)
    for rel in s.conflicts:
        print(f"warning: {shown(rel)}: kept the project's edited label map (use --overwrite to replace it)",
              file=sys.stderr)
    print(f"imported {s.imported} label maps from {shown(s.voc_root)} ({s.split}, {len(s.classes)} classes) into "
          f"{shown(args.into)}: {s.copied} images copied, {s.identical} already there"
          + (f", {s.unchanged} unchanged" if s.unchanged else "")
          + (f", {len(s.renamed)} stored under a new name" if s.renamed else "")
          + (f", {len(s.conflicts)} conflicts kept" if s.conflicts else "")
          + (f", {len(s.failed)} failed (named above, skipped)" if s.failed else ""))
    return 1 if s.failed else 0
