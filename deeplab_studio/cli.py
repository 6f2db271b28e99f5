"""The `deeplab-studio` entry point: the GUI by default, headless subcommands for batch work.

Each subcommand lives in `deeplab_studio.commands.<name>` and provides
`add_arguments(parser)` and `run(args) -> int`. Modules are imported only when their
subcommand runs, so `deeplab-studio --help` and the GUI start without importing torch.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from typing import NoReturn

from deeplab_studio import __version__
from deeplab_studio.commands import CommandError

#: subcommand name -> (module under deeplab_studio.commands, one-line summary)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("predict", "propose label maps for images with a DeepLab checkpoint"),
    "refine": ("refine", "snap a label map to image edges with the dense CRF"),
    "train": ("train", "train or fine-tune a model on a project or any importable dataset"),
    "evaluate": ("evaluate", "mIoU of a model on a dataset (VOC, CVAT masks, labelme, COCO, mask folders)"),
    "export": ("export", "export a project as a dataset: VOC, CVAT masks, labelme, COCO or mask folders"),
    "import": ("import_data", "import a dataset (VOC, CVAT masks, labelme, COCO, mask folders) into a project"),
    "import-voc": ("import_voc", "import a Pascal VOC dataset into a project (= import --format voc)"),
    "convert": ("convert", "convert a TFLite DeepLab (TF's mobile v3) into a checkpoint"),
    "simulate": ("simulate", "labelling effort: the actions a scripted user needs to reach a target mIoU"),
    "export-model": ("export_model", "export a model as an ONNX file (dynamic height and width)"),
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (and a pointer to --help), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _gui_parser() -> argparse.ArgumentParser:
    epilog = "subcommands (headless):\n" + "\n".join(
        f"  {name:<12} {summary}" for name, (_, summary) in SUBCOMMANDS.items()
    ) + "\n\nRun `deeplab-studio SUBCOMMAND --help` for a subcommand's options."
    p = _Parser(
        prog="deeplab-studio",
        description="Annotate images for semantic segmentation with DeepLab v3+ proposals and a dense CRF.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", nargs="?", help="folder of images to open (default: the last one)")
    p.add_argument("--demo", nargs="?", const="auto", choices=("photos", "scenes"), default=None,
                   help="open an offline demo: 'photos' (real photographs with the bundled VOC model, the "
                        "default) or 'scenes' (generated scenes with their small model, for the learning demo)")
    p.add_argument("--version", action="version", version=f"deeplab-studio {__version__}")
    return p


def _run_subcommand(name: str, argv: list[str]) -> int:
    module_name, summary = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(f"deeplab_studio.commands.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"deeplab_studio.commands.{module_name}":
            print(f"deeplab-studio: error: the '{name}' command is not available in this build", file=sys.stderr)
            return 2
        raise
    parser = _Parser(prog=f"deeplab-studio {name}", description=summary)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except CommandError as exc:
        print(f"deeplab-studio {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deeplab-studio {name}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _run_subcommand(argv[0], argv[1:])
    args = _gui_parser().parse_args(argv)
    if args.folder is not None and not os.path.isdir(args.folder):  # e.g. a mistyped subcommand
        near = difflib.get_close_matches(args.folder, list(SUBCOMMANDS), n=1)
        print(f"deeplab-studio: error: {args.folder}: no such folder"
              + (f" (did you mean the '{near[0]}' command?)" if near else ""), file=sys.stderr)
        return 2
    from deeplab_studio.gui.app import run_app  # Qt only, torch is imported lazily later

    return run_app(folder=args.folder, demo=args.demo or False)


if __name__ == "__main__":
    sys.exit(main())
