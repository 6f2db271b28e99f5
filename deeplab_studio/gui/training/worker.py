"""Fine-tuning in the background: `TrainRun` runs `ml.training.train` on a snapshot of the project.

The run is a superqt worker on the run's own `JobPool` (gui/workers/background_jobs.py). Only plain values
cross to it (`TrainRequest`: the project folder, paths, numbers); the training thread imports
torch lazily, opens its own read-only snapshot of the project (`Project.open(folder,
read_only=True)`, which works beside the window's writer lock), reads the `edited` and `reviewed`
images (`ml.datasets.from_project`: never the model's unreviewed `auto` proposals), trains, and
closes the snapshot. Progress (`TrainProgress` events) arrives in the GUI thread as signals;
`cancel()` stops at the next step (the best checkpoint so far is kept and the result still
reported); every error ends as the `failed` signal with one line, never as a crash.
`shutdown()` (window closing) aborts and joins the thread.

The run leaves the GUI its share of the CPU: torch trains with ``cores - 1`` threads and the data
loading stays in the training thread on the CPU (one loader process when CUDA trains).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from deeplab_studio.gui.workers.background_jobs import JobPool, TaskWorker
from deeplab_studio.gui.workers.jobs import SELF_DESCRIBING_ERRORS
from deeplab_studio.ml.train_config import TrainProgress, TrainResult
from deeplab_studio.storage.records import Status

INIT_IMAGENET, INIT_RANDOM = "imagenet", "random"
SHUTDOWN_TIMEOUT_MS = 60_000


@dataclass
class TrainRequest:
    """What to train: the plain values the dialog collects."""

    project_folder: str  # the training thread opens its own read-only snapshot of it
    out_path: Path
    arch: str | None = None  # None: the init checkpoint's arch
    init: str = INIT_IMAGENET  # "imagenet", "random", a bundled model's name or a checkpoint path (fine-tune)
    epochs: int = 10
    batch_size: int = 4
    crop: int = 321
    lr: float = 0.01
    freeze_bn: bool = False
    device: str = "auto"
    val_fraction: float = 0.2
    seed: int = 0
    edited_pixels_only: bool = False  # learn only the painted pixels of `edited` images
    cpu_threads: int | None = None  # None: max(1, cores - 1)
    num_workers: int | None = None  # None: 0 on the CPU, 1 when CUDA trains
    log_every: int | None = None  # None: about 200 loss points per run
    resume: bool = False  # continue a cancelled run from its resume state (`<out stem>.last.pt`)


TRAINABLE = (Status.EDITED, Status.REVIEWED)


def training_counts(project) -> dict[str, int]:
    """Images per status value; `trainable` = edited/reviewed images whose label map exists."""
    counts = {s.value: 0 for s in Status} | {"trainable": 0}
    for rec in project.records:
        counts[rec.status.value] += 1
        if rec.status in TRAINABLE and project.has_annotation(rec):
            counts["trainable"] += 1
    return counts


def default_output_path(data_dir: str | Path) -> Path:
    """`<data dir>/models/<timestamp>.safetensors`."""
    return Path(data_dir) / "models" / f"{time.strftime('%Y%m%d-%H%M%S')}.safetensors"


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "–"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def default_cpu_threads() -> int:
    return max(1, (os.cpu_count() or 1) - 1)


def describe_error(exc: BaseException) -> str:
    """One line for the window: our typed errors say it all; others get their type name."""
    name = type(exc).__name__
    text = (str(exc).strip().splitlines() or [""])[-1] if str(exc).strip() else ""
    if isinstance(exc, SELF_DESCRIBING_ERRORS):
        return str(exc).strip() or name
    if "out of memory" in str(exc).lower() or isinstance(exc, MemoryError):
        return f"out of memory while training ({text or name}); try a smaller batch size or crop"
    return f"{name}: {text}" if text else name


def run_training(req: TrainRequest, cancel: Callable[[], bool],
                 emit: Callable[[TrainProgress], None]) -> TrainResult | None:
    """Open a read-only snapshot of the project, load the data and train (in the calling thread);
    returns the `TrainResult`, or None when cancelled before training started."""
    import math

    from deeplab_studio.ml.datasets import from_project
    from deeplab_studio.ml.training import TrainConfig, resolve_device, train
    from deeplab_studio.storage.images import read_image
    from deeplab_studio.storage.project import Project

    with Project.open(req.project_folder, read_only=True) as project:  # images are read while training
        # storage's reader (a module function): samples stay picklable for spawned loader processes
        data = from_project(project, val_fraction=req.val_fraction, seed=req.seed,
                            edited_pixels_only=req.edited_pixels_only, read_image=read_image)
        if cancel():
            return None
        device = resolve_device(req.device)
        workers = req.num_workers if req.num_workers is not None else (1 if device.type == "cuda" else 0)
        steps = math.ceil(max(len(data.train), req.batch_size) / req.batch_size) * req.epochs
        log_every = req.log_every or max(1, steps // 200)
        config = TrainConfig(arch=req.arch, epochs=req.epochs, batch_size=req.batch_size, crop=req.crop,
                             lr=req.lr, freeze_bn=req.freeze_bn, device=str(device), num_workers=workers,
                             cpu_threads=req.cpu_threads or default_cpu_threads(), seed=req.seed,
                             val_fraction=req.val_fraction, init=req.init, log_every=log_every)
        out = Path(req.out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        result = train(config, data, out, progress=emit, cancel=cancel, resume=req.resume)
    if not result.cancelled:  # a finished run needs no resume state (it is as big as the model twice)
        Path(result.last_path).unlink(missing_ok=True)
    return result


def _train_job(task: TaskWorker, req: TrainRequest) -> TrainResult | None:
    return run_training(req, task.cancelled, task.report)


class TrainRun(QObject):
    """Starts one training run at a time on its own pool thread; signals arrive in the GUI thread."""

    started = Signal(object)  # TrainRequest
    progress = Signal(object)  # TrainProgress
    finished = Signal(object)  # TrainResult (result.cancelled tells a cancel) or None
    failed = Signal(str)
    stopped = Signal()  # the run has ended; `finished` or `failed` follows at once

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._jobs = JobPool(self, max_threads=1)
        self._worker: TaskWorker | None = None
        self._cancel_requested = False

    @property
    def running(self) -> bool:
        return self._worker is not None

    @property
    def thread_alive(self) -> bool:
        """Whether a training thread is still working (False once joined)."""
        return bool(self._jobs.jobs())

    def start(self, request: TrainRequest) -> bool:
        """Start training; False when a run is already going (or the window closed)."""
        if self.running:
            return False
        self._cancel_requested = False
        worker = self._jobs.start(_train_job, request, on_result=self._on_result, on_error=self._on_error,
                                  on_progress=self.progress.emit)
        if worker is None:
            return False
        self._worker = worker
        self.started.emit(request)
        return True

    def cancel(self) -> None:
        """Stop at the next step; the best checkpoint written so far stays."""
        self._cancel_requested = True
        if self._worker is not None:
            self._worker.cancel()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def shutdown(self, timeout_ms: int = SHUTDOWN_TIMEOUT_MS) -> bool:
        """Abort the run and join its thread (window closing); True when it ended in time."""
        self._cancel_requested = True
        ok = self._jobs.shutdown(timeout_ms)
        if self._worker is not None:
            self._worker = None
            self.stopped.emit()
        return ok

    def _end(self) -> bool:
        """The run's outcome arrived: not running any more (False after `shutdown`)."""
        if self._worker is None:
            return False
        self._worker = None
        self.stopped.emit()
        return True

    def _on_result(self, result: TrainResult | None) -> None:
        if self._end():
            self.finished.emit(result)

    def _on_error(self, exc: BaseException) -> None:
        if self._end():
            self.failed.emit(describe_error(exc))


__all__ = ["INIT_IMAGENET", "INIT_RANDOM", "TrainRequest", "TrainRun", "default_cpu_threads", "default_output_path",
           "describe_error", "format_eta", "run_training", "training_counts"]
