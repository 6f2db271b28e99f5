"""`deeplab-studio import-voc VOC_DIR --into FOLDER`: `import --format voc` under its older name.

Files that fail are named on stderr and skipped (exit status 1); bad input is one line, exit 2.
"""

from __future__ import annotations

import argparse

from deeplab_studio.commands.import_data import add_source_arguments, import_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="VOC_DIR",
                        help="VOC root (with JPEGImages/, SegmentationClass/), or a folder holding "
                             "VOC2012/ or VOCdevkit/VOC2012/")
    add_source_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return import_from(args, "voc")
