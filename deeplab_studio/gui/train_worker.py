"""Fine-tuning in a background thread: `TrainRun` runs `ml.training.train` on the open project.

A `_TrainJob` (a QObject moved to its own QThread) imports torch lazily, reads the project's
`edited` and `reviewed` images (`ml.datasets.from_project`: never the model's unreviewed `auto`
proposals) and trains. Training progress (`TrainProgress` events) crosses to the GUI thread as
Qt signals; a `threading.Event` cancels at the next step (the best checkpoint so far is kept);
every error ends as the `failed` signal with one line, never as a crash. `shutdown()` (window
closing) cancels and joins the thread.

The run leaves the GUI its share of the CPU: torch trains with ``cores - 1`` threads and the data
loading stays in the training thread on the CPU (one loader process when CUDA trains).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

INIT_IMAGENET, INIT_RANDOM = "imagenet", "random"


@dataclass
class TrainRequest:
    """What to train: the plain values the dialog collects."""

    project: Any  # storage.project.Project
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


#: ml.zoo.list_archs() without importing torch in the GUI thread (a test keeps them equal)
ARCHS = ("deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "deeplabv3plus_mobilenet",
         "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet", "deeplabv3_mobilenet_v3_large",
         "deeplabv3_mobilenetv2_tf", "deeplabv3_mobilenetv2_tf_dm05")
TRAINABLE = ("edited", "reviewed")


def list_archs() -> list[str]:
    """The registered architectures: zoo's own list once another thread has fully imported it,
    else ``ARCHS``. The inference worker may be importing zoo right now: a half-imported module
    has no ``list_archs`` yet, or a registry still being filled, so it is not asked."""
    zoo = sys.modules.get("deeplab_studio.ml.zoo")
    if zoo is None or getattr(getattr(zoo, "__spec__", None), "_initializing", False):
        return list(ARCHS)
    listed = getattr(zoo, "list_archs", None)
    return list(listed()) if callable(listed) else list(ARCHS)


def _status(rec) -> str:
    return str(getattr(rec.status, "value", rec.status))


def training_counts(project) -> dict[str, int]:
    """Images per status; `trainable` = edited/reviewed images whose label map exists."""
    counts = {"unlabeled": 0, "auto": 0, "edited": 0, "reviewed": 0, "trainable": 0}
    for rec in project.records:
        s = _status(rec)
        counts[s] = counts.get(s, 0) + 1
        if s in TRAINABLE and project.has_annotation(rec):
            counts["trainable"] += 1
    return counts


def default_output_path(project) -> Path:
    return Path(project.data_dir) / "models" / f"{time.strftime('%Y%m%d-%H%M%S')}.safetensors"


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
    if name in ("TrainError", "DatasetError", "CheckpointError", "ImageReadError", "ProjectError"):
        return str(exc).strip() or name
    if "out of memory" in str(exc).lower() or isinstance(exc, MemoryError):
        return f"out of memory while training ({text or name}); try a smaller batch size or crop"
    return f"{name}: {text}" if text else name


def run_training(req: TrainRequest, cancel: threading.Event, emit: Callable[[Any], None]):
    """Load the data and train (in the calling thread); returns the `TrainResult`."""
    import math

    from deeplab_studio.ml.datasets import from_project
    from deeplab_studio.ml.training import TrainConfig, resolve_device, train

    data = from_project(req.project, val_fraction=req.val_fraction, seed=req.seed,
                        edited_pixels_only=req.edited_pixels_only)
    if cancel.is_set():
        raise _Cancelled()
    device = resolve_device(req.device)
    workers = req.num_workers if req.num_workers is not None else (1 if device.type == "cuda" else 0)
    steps = math.ceil(max(len(data.train), req.batch_size) / req.batch_size) * req.epochs
    log_every = req.log_every or max(1, steps // 200)
    config = TrainConfig(arch=req.arch, epochs=req.epochs, batch_size=req.batch_size, crop=req.crop, lr=req.lr,
                         freeze_bn=req.freeze_bn, device=str(device), num_workers=workers,
                         cpu_threads=req.cpu_threads or default_cpu_threads(), seed=req.seed,
                         val_fraction=req.val_fraction, init=req.init, log_every=log_every)
    out = Path(req.out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = train(config, data, out, progress=emit, cancel=cancel)
    if not result.cancelled:  # a finished run needs no resume state (it is as big as the model twice)
        Path(result.last_path).unlink(missing_ok=True)
    return result


class _Cancelled(Exception):
    """Cancelled before training started."""


class _TrainJob(QObject):
    progress = Signal(object)  # ml.training.TrainProgress
    finished = Signal(object)  # ml.training.TrainResult, or None when cancelled before the start
    failed = Signal(str)

    def __init__(self, request: TrainRequest, cancel: threading.Event) -> None:
        super().__init__()
        self.request, self.cancel = request, cancel

    @Slot()
    def run(self) -> None:
        try:
            result = run_training(self.request, self.cancel, self.progress.emit)
        except _Cancelled:
            self.finished.emit(None)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a message in the window
            self.failed.emit(describe_error(exc))
        else:
            self.finished.emit(result)


class TrainRun(QObject):
    """Starts one training run at a time in its own thread; signals arrive in the GUI thread."""

    started = Signal(object)  # TrainRequest
    progress = Signal(object)  # TrainProgress
    finished = Signal(object)  # TrainResult (result.cancelled tells a cancel) or None
    failed = Signal(str)
    stopped = Signal()  # the thread has ended; `finished` or `failed` follows at once

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._job: _TrainJob | None = None
        self._cancel = threading.Event()
        self.request: TrainRequest | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, request: TrainRequest) -> bool:
        """Start training; False when a run is already going."""
        if self.running:
            return False
        self.request = request
        self._cancel = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName("deeplab-training")
        self._job = _TrainJob(request, self._cancel)
        self._job.moveToThread(self._thread)
        self._thread.started.connect(self._job.run)
        self._job.progress.connect(self._on_progress)
        self._job.finished.connect(self._on_finished)
        self._job.failed.connect(self._on_failed)
        self._thread.start()
        self.started.emit(request)
        return True

    def cancel(self) -> None:
        """Stop at the next step; the best checkpoint written so far stays."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def shutdown(self, timeout_ms: int = 60000) -> bool:
        """Cancel and join the thread (window closing); True when it ended in time."""
        self._cancel.set()
        return self._join(timeout_ms)

    def _join(self, timeout_ms: int = 60000) -> bool:
        thread = self._thread
        if thread is None:
            return True
        thread.quit()
        ok = bool(thread.wait(timeout_ms))
        if ok:
            self._thread, self._job = None, None
        return ok

    @Slot(object)
    def _on_progress(self, event) -> None:
        self.progress.emit(event)

    @Slot(object)
    def _on_finished(self, result) -> None:
        self._join()
        self.stopped.emit()
        self.finished.emit(result)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._join()
        self.stopped.emit()
        self.failed.emit(message)


__all__ = ["ARCHS", "INIT_IMAGENET", "INIT_RANDOM", "TrainRequest", "TrainRun", "default_cpu_threads",
           "default_output_path", "describe_error", "format_eta", "list_archs", "run_training", "training_counts"]
