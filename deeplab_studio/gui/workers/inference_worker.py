"""The inference worker: one long-lived `QObject` on its own `QThread` that owns the Predictor.

Main-thread code talks to `InferenceClient` (gui/workers/inference_client.py) only. It queues
jobs (load a model, propose a label map for one image, a batch of images), each with a request
id; the worker runs them one at a time in priority order (interactive before pre-compute before
batch) and answers with signals. Only numpy arrays, strings and numbers cross the thread
boundary (gui/workers/jobs.py): a batch result is a proposal like any other, and the controller
has the session merge it.

- torch and the ml package are imported lazily inside the worker thread, on its first job.
- A result for an image the user has left, or for an older request of the same image, is dropped
  by the client (`proposalReady` never fires for it).
- Cancel works between images and, through the Predictor's cancel hook, between tiles.
- Errors (bad checkpoint, CUDA out of memory, unreadable image) come back as `failed` signals.
- Click to correct (`correct`, interactive) and review scoring (`start_review`, a batch) run here
  too (gui/workers/assist_jobs.py), with the same priorities, cancelling and stale-result rules.
"""

from __future__ import annotations

import os
import time

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal, Slot

from deeplab_studio.gui.workers.assist_jobs import AssistJobs
from deeplab_studio.gui.workers.jobs import (BATCH, INTERACTIVE, PREFETCH, Correction, Job, JobCancelled,
                                               JobFailure, JobKind, JobQueue, ModelInfo, Priority, Proposal,
                                               ReviewResult, describe_error, model_info, probe_devices, stripped)
from deeplab_studio.ml.errors import PredictionCancelled

__all__ = ["BATCH", "INTERACTIVE", "PREFETCH", "Correction", "InferenceWorker", "Job", "JobFailure",
           "JobKind", "JobQueue", "ModelInfo", "Priority", "Proposal", "ReviewResult"]


def cpu_threads() -> int:
    """Torch threads for CPU inference: every core but one, which stays with the GUI thread.

    Measured here (2 busy cores): a 320×240 demo proposal took 1.2–1.6 s with 2 OpenMP threads
    fighting the GUI and other processes for the cores, 0.08 s with 1.
    """
    env = os.environ.get("DEEPLAB_STUDIO_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 2) - 1)


def set_cpu_threads() -> None:
    import torch

    torch.set_num_threads(cpu_threads())  # OpenMP settings are per thread: called in the worker


class InferenceWorker(QObject):
    """Lives in the worker thread; pops jobs from the shared queue and runs them."""

    modelLoaded = Signal(object)  # ModelInfo
    warning = Signal(str)  # e.g. CUDA out of memory: smaller tiles / moved to the CPU
    devicesProbed = Signal(object)  # list of (device name, label)
    resultReady = Signal(object)  # Proposal
    correctionReady = Signal(object)  # Correction
    reviewReady = Signal(object)  # ReviewResult
    failed = Signal(object)  # JobFailure
    cancelled = Signal(object)  # Job (without its arrays)
    tileProgress = Signal(int, int, int)  # request id, tiles done, tiles in all (emitted between tiles)
    _wake = Signal()

    def __init__(self, queue: JobQueue) -> None:
        super().__init__()
        self._queue = queue
        self._predictor = None
        self._crf = None  # ml.crf.ProposalCRF of the loaded model
        self._assist = AssistJobs()
        self.current: Job | None = None
        # always queued: a pump posted from inside pump runs after the thread's pending events,
        # never as a nested call (a 1000-image batch would otherwise recurse 1000 deep)
        self._wake.connect(self.pump, Qt.ConnectionType.QueuedConnection)

    @Slot()
    def pump(self) -> None:
        """Run one job, then post another pump so queued signals are handled in between."""
        job = self._queue.pop()
        if job is None:
            return
        self.current = job
        try:
            if job.kind == JobKind.LOAD:
                self._load(job)
            elif job.kind == JobKind.PROBE:
                self.devicesProbed.emit(probe_devices())
            elif job.kind == JobKind.CLICK:
                self.correctionReady.emit(self._assist.correct(self._loaded_predictor(), job))
            elif job.kind == JobKind.REVIEW:
                self.reviewReady.emit(self._assist.review(self._loaded_predictor(), job))
            else:
                self._predict(job)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a signal
            if isinstance(exc, (PredictionCancelled, JobCancelled)) or job.cancelled.is_set():
                self.cancelled.emit(stripped(job))
            else:
                self.failed.emit(JobFailure(job.request_id, job.key, job.kind, describe_error(exc), job.batch_id,
                                            job.priority))
        finally:
            self.current = None
        if len(self._queue):
            self._wake.emit()

    # --- jobs ----------------------------------------------------------------------------
    def _load(self, job: Job) -> None:
        from deeplab_studio.ml.checkpoints import load_checkpoint
        from deeplab_studio.ml.crf import model_crf
        from deeplab_studio.ml.predictor import Predictor, resolve_device

        device = resolve_device(job.device)
        set_cpu_threads()
        loaded = load_checkpoint(job.path, device="cpu")
        predictor = Predictor(loaded, device=str(device), on_warning=self.warning.emit, **job.options)
        crf = model_crf(job.path)  # the model card's CRF setting, else the defaults
        self._predictor, self._crf = predictor, crf
        self._assist.reset()
        self.modelLoaded.emit(model_info(loaded, job.path, str(device), job.request_id, crf.params))

    def _loaded_predictor(self):
        if self._predictor is None:
            raise RuntimeError("no model is loaded (Model → Open model…)")
        return self._predictor

    def _predict(self, job: Job) -> None:
        self._loaded_predictor()
        if job.cancelled.is_set():
            raise JobCancelled()
        t0 = time.perf_counter()
        image = job.image
        if image is None:
            from deeplab_studio.storage.images import read_image

            image = read_image(job.path)
        def tiles(done: int, total: int) -> None:
            if total > 1:
                self.tileProgress.emit(job.request_id, done, total)

        pred = self._predictor.predict(image, cancel=job.cancelled.is_set, progress=tiles)
        if job.cancelled.is_set():
            raise JobCancelled()
        labels = pred.labels
        refined = False
        if job.crf:
            from deeplab_studio.ml.crf import refine

            if job.crf_params is None:  # the CRF panel was not used: the model's own setting
                labels = self._crf(image, pred.probs, labels=pred.labels)
            else:
                labels = refine(image, pred.probs, params=job.crf_params)
            refined = True
        if job.lut is not None:
            labels = job.lut[labels]
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        conf = np.clip(np.asarray(pred.confidence, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        self.resultReady.emit(Proposal(job.request_id, job.key, labels, conf, job.priority, job.batch_id,
                                       time.perf_counter() - t0, refined))
