"""Plain data of the inference worker: jobs, results, the shared job queue, batch progress.

Nothing here is a Qt object, so everything can cross between the GUI thread and the worker
thread; only numpy arrays, strings and numbers do. `model_info` and `probe_devices` run in the
worker thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

import numpy as np

from deeplab_studio.ml.errors import SELF_DESCRIBING
from deeplab_studio.storage.images import ImageReadError
from deeplab_studio.storage.records import ProjectError

#: errors whose message reads as one complete line for the user (no class name needed)
SELF_DESCRIBING_ERRORS: tuple[type[BaseException], ...] = SELF_DESCRIBING + (ImageReadError, ProjectError)


class JobKind(str, Enum):
    LOAD = "load"
    PREDICT = "predict"
    PROBE = "probe"
    CLICK = "click"  # click to correct the model (ml.click_correct) on the image on screen
    REVIEW = "review"  # score one saved label map against the model (session.review)


class Priority(IntEnum):
    """Job priorities: lower runs first."""

    INTERACTIVE = 0
    PREFETCH = 1
    BATCH = 2


INTERACTIVE, PREFETCH, BATCH = Priority.INTERACTIVE, Priority.PREFETCH, Priority.BATCH


@dataclass
class Job:
    """One unit of work for the worker thread (plain data only)."""

    kind: JobKind
    request_id: int
    key: str = ""
    image: np.ndarray | None = None  # uint8 H×W×3; or read from `path` in the worker
    path: str = ""
    priority: Priority = INTERACTIVE
    batch_id: int | None = None
    crf: bool = False
    crf_params: Any = None  # ml.crf.CRFParams (a plain dataclass) or None
    lut: np.ndarray | None = None  # 256-entry uint8 model-class -> project-class table
    device: str = "auto"
    cancelled: threading.Event = field(default_factory=threading.Event)
    options: dict = field(default_factory=dict)  # "load": Predictor keyword options (tile_size, tta...)
    labels: np.ndarray | None = None  # "click": the label map (project values); "review": the human labels
    edit_mask: np.ndarray | None = None  # "click": the pixels a human painted (kept)
    clicks: tuple[tuple[int, int, int], ...] = ()  # "click": every (x, y, class) of this image so far
    read_labels: Callable[[], np.ndarray] | None = None  # "review": reads the saved labels in the worker


@dataclass
class Proposal:
    """A finished proposal: labels in project classes and the model's per-pixel confidence."""

    request_id: int
    key: str
    labels: np.ndarray  # uint8 H×W
    confidence: np.ndarray  # uint8 H×W, max softmax probability × 255
    priority: Priority
    batch_id: int | None
    seconds: float
    refined: bool

    @property
    def mean_uncertainty(self) -> float:
        """1 − mean confidence, in [0, 1]."""
        return 1.0 - float(self.confidence.mean()) / 255.0


@dataclass
class Correction:
    """A finished click correction: the re-proposed label map (human pixels kept) and what it took."""

    request_id: int
    key: str
    labels: np.ndarray  # uint8 H×W, project classes
    clicks: int  # clicks that constrained the network
    won: int  # clicks whose pixel ended in its class by the margin
    steps: int  # optimiser steps
    seconds: float
    features_seconds: float  # the backbone and ASPP run for this image (0 when cached)


@dataclass
class ReviewResult:
    """One image's review score and its disagreement map (uint8 H×W, 1 − P(label) × 255)."""

    request_id: int
    key: str
    review: Any  # session.review.ImageReview
    disagreement: np.ndarray
    batch_id: int | None
    seconds: float


@dataclass
class JobFailure:
    request_id: int
    key: str
    kind: JobKind
    message: str
    batch_id: int | None = None
    priority: Priority = INTERACTIVE


def describe_error(exc: BaseException) -> str:
    """One readable line for an exception raised while loading or predicting."""
    text = str(exc).strip() or type(exc).__name__
    if "out of memory" in text.lower():
        return f"Out of memory on the device: {text.splitlines()[0]}. Try the CPU or a smaller tile size."
    if isinstance(exc, SELF_DESCRIBING_ERRORS):
        return text
    return f"{type(exc).__name__}: {text}"


class JobCancelled(Exception):
    """The job's `cancelled` event was set (raised in the worker between steps)."""


def stripped(job: Job) -> Job:
    """`job` without its arrays (what a cancel notice carries back)."""
    return Job(job.kind, job.request_id, job.key, None, job.path, job.priority, job.batch_id, clicks=job.clicks)


@dataclass(frozen=True)
class ModelInfo:
    """Plain description of a loaded checkpoint and the device it runs on."""

    path: str
    arch: str
    num_classes: int
    class_names: tuple[str, ...] | None
    class_colors: tuple[tuple[int, ...], ...] | None
    output_stride: int | None
    device: str
    device_label: str
    request_id: int = 0  # the load request that produced it
    crf_params: Any = None  # ml.crf.CRFParams its proposals are refined with (its card's, else the defaults)

    @property
    def file_name(self) -> str:
        return self.path.replace("\\", "/").rsplit("/", 1)[-1]

    def status_text(self) -> tuple[str, str]:
        """Short status-bar text (model file stem · device) and a tooltip with the details."""
        tip = (f"{self.path}\n{self.arch}, {self.num_classes} classes, "
               f"output stride {self.output_stride}\n{self.device_label}")
        return f"{self.file_name.rsplit('.', 1)[0]} · {self.device_label.split(',')[0]}", tip


def model_info(loaded, path: str, device: str, request_id: int = 0, crf_params: Any = None) -> ModelInfo:
    """The `ModelInfo` of a loaded checkpoint (`ml.checkpoints.LoadedCheckpoint`) on `device`."""
    return ModelInfo(
        path=str(path), arch=loaded.arch, num_classes=int(loaded.num_classes),
        class_names=tuple(loaded.class_names) if loaded.class_names else None,
        class_colors=tuple(tuple(c) for c in loaded.class_colors) if loaded.class_colors else None,
        output_stride=loaded.output_stride, device=device, device_label=device_label(device),
        request_id=request_id, crf_params=crf_params)


def device_label(device: str) -> str:
    """'CPU' or 'CUDA: <GPU name>, <memory> GB' (torch must already be imported by the caller)."""
    if not device.startswith("cuda"):
        return device.upper()
    import torch

    idx = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(idx)
    return f"CUDA: {props.name}, {props.total_memory / 2**30:.1f} GB"


def probe_devices() -> list[tuple[str, str]]:
    """[(device, label)]: "auto", "cpu", then each CUDA GPU with its name and memory, and MPS."""
    import torch

    from deeplab_studio.ml.predictor import resolve_device

    auto = str(resolve_device("auto"))
    out = [("auto", f"Auto ({device_label(auto)})"), ("cpu", "CPU")]
    if torch.cuda.is_available():
        out += [(f"cuda:{i}", device_label(f"cuda:{i}")) for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append(("mps", "Apple MPS"))
    return out


class JobQueue:
    """Thread-safe priority queue shared by the client (producer) and the worker (consumer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: list[Job] = []

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def push(self, job: Job) -> None:
        with self._lock:
            self._jobs.append(job)

    def pop(self) -> Job | None:
        with self._lock:
            if not self._jobs:
                return None
            best = min(range(len(self._jobs)), key=lambda i: (self._jobs[i].priority, i))
            return self._jobs.pop(best)

    def remove(self, predicate) -> list[Job]:
        """Take out (and return) every queued job for which `predicate(job)` is true."""
        with self._lock:
            gone = [j for j in self._jobs if predicate(j)]
            self._jobs = [j for j in self._jobs if not predicate(j)]
        return gone


@dataclass
class BatchState:
    batch_id: int
    total: int
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)

    def rate_and_eta(self) -> tuple[float, float]:
        """Images per second so far and estimated seconds left."""
        elapsed = max(time.perf_counter() - self.started, 1e-6)
        finished = self.done + self.failed
        rate = finished / elapsed
        eta = (self.total - finished) / rate if rate > 0 else float("nan")
        return rate, eta
