"""Plain data of the inference worker: jobs, results, the shared job queue, batch progress.

Nothing here is a Qt object, so everything can cross between the GUI thread and the worker
thread. `merge_into_project`, `model_info` and `probe_devices` run in the worker thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# job priorities: lower runs first
INTERACTIVE, PREFETCH, BATCH = 0, 1, 2


@dataclass
class Job:
    """One unit of work for the worker thread (plain data only)."""

    kind: str  # "load" | "predict"
    request_id: int
    key: str = ""
    image: np.ndarray | None = None  # uint8 H×W×3; or read from `path` in the worker
    path: str = ""
    priority: int = INTERACTIVE
    batch_id: int | None = None
    crf: bool = False
    crf_params: Any = None  # ml.crf.CRFParams (a plain dataclass) or None
    lut: np.ndarray | None = None  # 256-entry uint8 model-class -> project-class table
    device: str = "auto"
    project: Any = None  # storage.Project: merge the proposal into the saved map here (batch jobs)
    cancelled: threading.Event = field(default_factory=threading.Event)
    options: dict = field(default_factory=dict)  # "load": Predictor keyword options (tile_size, tta...)


@dataclass
class Proposal:
    """A finished proposal: labels in project classes and the model's per-pixel confidence."""

    request_id: int
    key: str
    labels: np.ndarray  # uint8 H×W
    confidence: np.ndarray  # uint8 H×W, max softmax probability × 255
    priority: int
    batch_id: int | None
    seconds: float
    refined: bool
    saved: bool = False  # already merged into the project's saved label map by the worker

    @property
    def mean_uncertainty(self) -> float:
        """1 − mean confidence, in [0, 1]."""
        return 1.0 - float(self.confidence.mean()) / 255.0


@dataclass
class JobFailure:
    request_id: int
    key: str
    kind: str
    message: str
    batch_id: int | None = None
    priority: int = INTERACTIVE


def describe_error(exc: BaseException) -> str:
    """One readable line for an exception raised while loading or predicting."""
    text = str(exc).strip() or type(exc).__name__
    if "out of memory" in text.lower():
        return f"Out of memory on the device: {text.splitlines()[0]}. Try the CPU or a smaller tile size."
    name = type(exc).__name__
    if name in ("CheckpointError", "ImageReadError", "ProjectError"):
        return text
    return f"{name}: {text}"


def merge_into_project(project, key: str, proposal: np.ndarray) -> bool:
    """Merge a proposal into the saved label map of `key`, human pixels kept (worker thread).

    Each save is committed to the project index at once (one transaction).
    """
    rec = project.record(key)
    labels, edit_mask = project.load_annotation(rec)
    if labels.shape != proposal.shape:
        raise ValueError(f"{key}: the image is {labels.shape[1]}×{labels.shape[0]}, "
                         f"the proposal {proposal.shape[1]}×{proposal.shape[0]}")
    merged = np.where(edit_mask, labels, proposal).astype(np.uint8)
    project.save_annotation(rec, merged, edit_mask, write_index=False)
    return True


class _Cancelled(Exception):
    pass


def _strip(job: Job) -> Job:
    return Job(job.kind, job.request_id, job.key, None, job.path, job.priority, job.batch_id)


def model_info(loaded, path: str, device: str) -> dict:
    """Plain description of a loaded checkpoint and the device it runs on."""
    info = {
        "path": str(path),
        "arch": loaded.arch,
        "num_classes": int(loaded.num_classes),
        "class_names": list(loaded.class_names) if loaded.class_names else None,
        "class_colors": [tuple(c) for c in loaded.class_colors] if getattr(loaded, "class_colors", None) else None,
        "output_stride": getattr(loaded, "output_stride", None),
        "device": device,
    }
    info["device_label"] = device_label(device)
    return info


def model_status_text(info: dict) -> tuple[str, str]:
    """Short status-bar text (model file stem · device) and a tooltip with the details."""
    name = info["path"].replace("\\", "/").rsplit("/", 1)[-1]
    tip = (f"{info['path']}\n{info['arch']}, {info['num_classes']} classes, "
           f"output stride {info['output_stride']}\n{info['device_label']}")
    return f"{name.rsplit('.', 1)[0]} · {info['device_label'].split(',')[0]}", tip


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
        self.current_key: str | None = None  # the image on screen (written by the GUI thread)

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
