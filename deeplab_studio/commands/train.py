"""`deeplab-studio train`: train or fine-tune a model on a project folder or any importable dataset.

DATA is an annotated project folder (its `edited` and `reviewed` images only) or a dataset in
any format `import` reads (VOC, CVAT masks, labelme, COCO, images/ + masks/), read by the same
readers as `import`: the same classes, colours and EXIF rule. `--format auto` takes a VOC or
CVAT-mask folder first, then a project, then the other formats.
`--init` picks the start: a bundled model (by default the Pascal VOC model, when `--arch` is not
given or is its architecture), a checkpoint, an ImageNet backbone or random weights.
The best model by validation mIoU is written to --out in the own checkpoint format, loadable by
`predict`/`evaluate`; `<out stem>.last.pt` beside it holds the resume state (--resume).
Ctrl-C once stops after the current step, keeping the best model and the resume state.
`--nproc N` trains data-parallel in N local processes (gloo on the CPU, NCCL with one GPU each);
each process of `torchrun --standalone --nproc-per-node N -m deeplab_studio train ...` is one rank
(rank 0 prints and writes). `--batch-size` is then the total over the processes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from deeplab_studio.commands import CommandError
from deeplab_studio.commands.import_data import FORMAT_CHOICES
from deeplab_studio.models import VOC_MODEL

_SHORT_NAMES = {"voc": "VOC", "cvat-mask": "CVAT masks", "masks": "mask folder", "labelme": "labelme", "coco": "COCO"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="project folder, or a dataset folder (VOC, CVAT masks, labelme, "
                                                      "COCO, images/ + masks/)")
    parser.add_argument("--format", default="auto", choices=("auto", "project", *FORMAT_CHOICES[1:]),
                        help="what DATA is (default auto: a VOC/CVAT-mask folder, else a project, else detected)")
    parser.add_argument("--out", required=True, metavar="CKPT", help="where to write the best model (.safetensors)")
    parser.add_argument("--arch", default=None, metavar="ARCH",
                        help="deeplabv3plus_resnet50|resnet101|mobilenet, deeplabv3_..., deeplabv3_mobilenetv2_tf "
                             "(default: the --init model's; must be it when --init is a model)")
    parser.add_argument("--epochs", type=int, default=30, metavar="N", help="passes over the training images (default 30)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="B", help="crops per step (default 8)")
    parser.add_argument("--crop", type=int, default=321, metavar="S", help="square training crop in pixels (default 321)")
    parser.add_argument("--lr", type=float, default=None, metavar="LR",
                        help="base learning rate (default: SGD 0.01 from imagenet/random, 0.001 when --init is a "
                             "model, which keeps what it knows; AdamW 1e-4)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--weight-decay", type=float, default=1e-4, metavar="WD", help="default 1e-4")
    parser.add_argument("--freeze-bn", action="store_true", help="keep BatchNorm statistics fixed (small batches)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    parser.add_argument("--init", default=None, metavar=f"{VOC_MODEL}|CKPT|imagenet|random",
                        help=f"start from a bundled model ({VOC_MODEL}: DeepLab v3 MobileNetV2 trained on Pascal "
                             "VOC), a checkpoint file or Hugging Face folder (fine-tune: the backbone and ASPP are "
                             "kept, the class layer is resized to DATA's classes, keeping the rows of classes with "
                             "the same name), an ImageNet backbone (random when the weights cannot be had) or random "
                             f"weights. Default: {VOC_MODEL} when --arch is not given or is its architecture, "
                             "else imagenet")
    parser.add_argument("--output-stride", type=int, choices=(8, 16), default=16)
    parser.add_argument("--separable", action="store_true", help="depthwise-separable ASPP/decoder (new models)")
    parser.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                        help="held-out share when the data has no validation split (default 0.2)")
    parser.add_argument("--edited-pixels-only", action="store_true",
                        help="project: learn only the painted pixels of `edited` images (reviewed count whole)")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="data loader processes (default: up to 4)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for torch while training")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="split, augmentation and init seed (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue from <out stem>.last.pt")
    parser.add_argument("--nproc", type=int, default=1, metavar="N",
                        help="data-parallel training in N local processes (gloo on the CPU, NCCL with one GPU each; "
                             "--batch-size is the total over them). Under torchrun each process is one rank")
    parser.add_argument("--quiet", action="store_true", help="only messages and one line per epoch")


def resolve_init(init: str | None, arch: str | None) -> str:
    """`--init` checked: "imagenet", "random", an existing checkpoint file or folder, or a bundled
    model's name. Without it: the bundled VOC model when `--arch` is absent or its architecture
    (and the model is bundled), else "imagenet"."""
    from deeplab_studio.models import bundled_models, model_card

    bundled = bundled_models()
    if init is None:
        if VOC_MODEL in bundled and arch in (None, model_card(VOC_MODEL).get("arch")):
            return VOC_MODEL
        return "imagenet"
    if init in ("imagenet", "random") or Path(init).exists() or init in bundled:
        return init
    raise CommandError(f"{init}: --init must be a bundled model ({', '.join(bundled) or 'none bundled'}), "
                       "a checkpoint file, 'imagenet' or 'random'")


def default_lr(optimizer: str, init: str) -> float:
    """AdamW 1e-4; SGD 0.01 from scratch or an ImageNet backbone, 0.001 from a trained model: on a
    few images 0.01 makes the bundled VOC model forget classes the data lacks within 20 steps
    (benchmarks/bench_finetune_init.py)."""
    if optimizer == "adamw":
        return 1e-4
    return 0.01 if init in ("imagenet", "random") else 0.001


def load_data(path: Path, *, val_fraction: float, seed: int, edited_pixels_only: bool = False, fmt: str = "auto"):
    """TrainData from a project folder or a dataset read by storage's readers (CommandError if
    it is neither); images are read by storage's `read_image` (EXIF applied) and label maps by
    the reader's items (rotated with their image), as `import` and `evaluate` read them."""
    from deeplab_studio.ml.datasets import DatasetError, from_items, from_project
    from deeplab_studio.storage.formats import available, detect, open_dataset
    from deeplab_studio.storage.formats.base import FormatError
    from deeplab_studio.storage.images import read_image
    from deeplab_studio.storage.locations import existing_data_dir
    from deeplab_studio.storage.project import Project, ProjectError

    if not path.exists():
        raise CommandError(f"{path}: not a folder")
    try:
        chosen = fmt
        if fmt == "auto":
            try:
                chosen = detect(path)
            except FormatError:
                chosen = "project" if existing_data_dir(path) is not None else ""
            if chosen not in ("voc", "cvat-mask", "") and existing_data_dir(path) is not None:
                chosen = "project"  # a project folder holding labelme files, say: the project is what is edited
        if not chosen:
            raise CommandError(f"{path}: neither a VOC folder nor another dataset this app reads "
                               f"({', '.join(available())}), nor an annotated project")
        if chosen == "project":
            try:
                project = Project.open(path, read_only=True)  # training only reads: a window may be writing
            except ProjectError as exc:
                raise CommandError(str(exc)) from None
            # storage's reader, not the project's: loader processes started by spawn must pickle it
            return from_project(project, val_fraction=val_fraction, seed=seed, edited_pixels_only=edited_pixels_only,
                                read_image=read_image)
        source = open_dataset(path, chosen)
        for name, why in source.problems[:10]:
            print(f"warning: skipped {name}: {why}", file=sys.stderr)
        if len(source.problems) > 10:
            print(f"warning: skipped {len(source.problems) - 10} more files", file=sys.stderr)
        label = _SHORT_NAMES.get(source.format, source.format)
        return from_items(source.items, source.class_names, source.colors, read_image=read_image,
                          val_fraction=val_fraction, seed=seed, source=f"{label} {source.root}",
                          info={"kind": source.format, "folder": str(source.root), "skipped": len(source.problems)})
    except (DatasetError, FormatError, ValueError) as exc:
        raise CommandError(str(exc)) from None


def _one_line(exc: BaseException) -> str:
    """The message of an error; one raised in a loader worker arrives wrapped in a traceback,
    whose last line is ``module.Error: message``."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) <= 1:
        return str(exc)
    last = lines[-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and head.replace(".", "").replace("_", "").isalnum() else last


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class ProgressBar:
    """Training progress on stderr: one rewritten line on a terminal, plain lines otherwise."""

    def __init__(self, *, quiet: bool = False, stream=None) -> None:
        self.quiet, self.stream = quiet, stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.open_line = False

    def _line(self, text: str, *, final: bool) -> None:
        if self.tty and not final:
            self.stream.write("\r\033[K" + text)
            self.open_line = True
        else:
            self.stream.write(("\r\033[K" if self.tty and self.open_line else "") + text + "\n")
            self.open_line = False
        self.stream.flush()

    def __call__(self, p) -> None:
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        if p.kind == "message":
            self._line(p.message, final=True)
        elif p.kind == "step" and not self.quiet:
            done = int(30 * p.step / max(1, p.total_steps))
            self._line(f"epoch {p.epoch}/{p.epochs} [{'#' * done}{'.' * (30 - done)}] step {p.step}/{p.total_steps} "
                       f"loss {p.loss:.4f} lr {p.lr:.2e} val mIoU {fmt(p.val_miou)} "
                       f"{p.images_per_s or 0:.1f} img/s ETA {_duration(p.eta_s)}", final=False)
        elif p.kind == "epoch":
            self._line(f"epoch {p.epoch}/{p.epochs}: loss {p.loss:.4f}  val mIoU {fmt(p.val_miou)}  best "
                       f"{fmt(p.best_miou)}{'  (saved)' if p.message == 'new best' else ''}  ETA {_duration(p.eta_s)}",
                       final=True)


def run(args: argparse.Namespace) -> int:
    from deeplab_studio.ml import distributed
    from deeplab_studio.ml.datasets import DatasetError
    from deeplab_studio.ml.training import TrainConfig, TrainError, train

    if args.nproc < 1:
        raise CommandError(f"--nproc must be at least 1, not {args.nproc}")
    launched = distributed.launched_by_torchrun()
    if launched and args.nproc > 1:
        raise CommandError("torchrun started this process as one rank: leave out --nproc")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CommandError(f"{out.parent}: the output folder does not exist")
    init = resolve_init(args.init, args.arch)
    lr = args.lr if args.lr is not None else default_lr(args.optimizer, init)
    try:
        config = TrainConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, crop=args.crop, lr=lr,
                             optimizer=args.optimizer, weight_decay=args.weight_decay, freeze_bn=args.freeze_bn,
                             device=args.device, amp=not args.no_amp, num_workers=args.workers, seed=args.seed,
                             val_fraction=args.val_fraction, init=init, output_stride=args.output_stride,
                             separable=args.separable, cpu_threads=args.threads)
    except TrainError as exc:
        raise CommandError(str(exc)) from None
    data = load_data(Path(args.data), val_fraction=args.val_fraction, seed=args.seed,
                     edited_pixels_only=args.edited_pixels_only, fmt=args.format)

    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(_signum, _frame) -> None:
        if stop.is_set():  # second Ctrl-C: stop at once
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGINT, on_sigint)
    t0 = time.monotonic()
    rank0 = True
    try:
        if launched:
            rank0 = distributed.init_from_env(args.device).is_main
        result = train(config, data, out, progress=ProgressBar(quiet=args.quiet) if rank0 else None, cancel=stop,
                       resume=args.resume, nproc=args.nproc)
    except (TrainError, DatasetError) as exc:
        raise CommandError(_one_line(exc)) from None
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
        if launched:
            distributed.shutdown()
    if not rank0:
        return 130 if result.cancelled else 0
    best = "-" if result.best_miou is None else f"{result.best_miou:.4f}"
    state = "cancelled" if result.cancelled else "finished"
    where = f"best model (epoch {result.best_epoch}, val mIoU {best}) in {out}" if result.saved else "no model saved"
    print(f"{state} after {result.steps} steps in {_duration(time.monotonic() - t0)}: {where}; "
          f"resume state {result.last_path}", file=sys.stderr, flush=True)
    return 130 if result.cancelled else 0
