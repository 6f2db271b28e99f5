"""The GUI-thread side of the inference worker: `InferenceClient` queues requests, drops stale
results and tracks batches; `InferenceWorker` (gui/workers/inference_worker.py) runs them in its
own thread, started on the first request.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from deeplab_studio.gui.workers.jobs import (BATCH, INTERACTIVE, PREFETCH, BatchState, Correction, Job, JobFailure,
                                               JobKind, JobQueue, ModelInfo, Priority, Proposal, ReviewResult)
from deeplab_studio.gui.workers.inference_worker import InferenceWorker


class InferenceClient(QObject):
    """Main-thread side: queues requests, drops stale results, tracks batches.

    `proposalReady(Proposal)` fires only for results still wanted: an interactive result only for
    the image that is current (`set_current_key`) and only for the newest request of that image;
    pre-compute and batch results only when no newer request for that image was made.
    """

    proposalReady = Signal(object)  # Proposal
    correctionReady = Signal(object)  # Correction, only the newest for the image on screen
    reviewReady = Signal(object)  # ReviewResult of a review batch not cancelled
    failed = Signal(object)  # JobFailure
    modelLoaded = Signal(object)  # ModelInfo
    modelFailed = Signal(str)
    warning = Signal(str)  # the Predictor recovered from something (e.g. out of memory)
    devicesProbed = Signal(object)  # list of (device, label)
    batchProgress = Signal(int, int, int, float, float)  # batch id, finished, total, images/s, eta s
    batchFinished = Signal(int, int, int, bool)  # batch id, done, failed, cancelled
    tileProgress = Signal(int, int, int)  # request id, tiles done, tiles in all (large images only)
    requestCancelled = Signal(int)  # request id of a job the worker stopped (between tiles or images)
    busyChanged = Signal(bool)
    dropped = Signal(object)  # Proposal, Correction or ReviewResult that arrived stale

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._queue = JobQueue()
        self._thread: QThread | None = None
        self._worker: InferenceWorker | None = None
        self._latest: dict[str, int] = {}
        self._latest_click: dict[str, int] = {}  # image key -> newest click-correction request
        self._live: dict[int, Job] = {}  # request id -> job queued or running
        self._batches: dict[int, BatchState] = {}
        self.current_key: str | None = None
        self.model: ModelInfo | None = None
        self._was_busy = False

    # --- life cycle ----------------------------------------------------------------------
    def _ensure_thread(self) -> InferenceWorker:
        if self._worker is None:
            self._thread = QThread()
            self._thread.setObjectName("deeplab-inference")
            self._worker = InferenceWorker(self._queue)
            self._worker.moveToThread(self._thread)
            self._worker.resultReady.connect(self._on_result)
            self._worker.correctionReady.connect(self._on_correction)
            self._worker.reviewReady.connect(self._on_review)
            self._worker.failed.connect(self._on_failed)
            self._worker.cancelled.connect(self._on_cancelled)
            self._worker.modelLoaded.connect(self._on_model_loaded)
            self._worker.warning.connect(self.warning)
            self._worker.devicesProbed.connect(self._on_devices)
            self._worker.tileProgress.connect(self.tileProgress)  # queued: the client is in the GUI thread
            self._thread.start()
        return self._worker

    @property
    def worker(self) -> InferenceWorker | None:
        """The worker object (it lives in the worker thread); None before the first request."""
        return self._worker

    @property
    def running(self) -> bool:
        """Whether the worker thread is started and not yet joined."""
        return self._thread is not None and self._thread.isRunning()

    @property
    def busy(self) -> bool:
        return bool(self._live)

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Cancel everything and join the thread; True when it ended in time."""
        self.cancel_all()
        if self._thread is None:
            return True
        self._thread.quit()
        ok = self._thread.wait(timeout_ms)
        self._worker = None
        self._thread = None
        return bool(ok)

    # --- requests ------------------------------------------------------------------------
    def _submit(self, job: Job) -> int:
        worker = self._ensure_thread()
        self._live[job.request_id] = job
        if job.kind == JobKind.PREDICT:
            self._latest[job.key] = job.request_id
        self._queue.push(job)
        worker._wake.emit()
        if not self._was_busy:
            self._was_busy = True
            self.busyChanged.emit(True)
        return job.request_id

    def probe_devices(self) -> int:
        """Ask the worker which devices exist (answered by `devicesProbed`)."""
        return self._submit(Job(JobKind.PROBE, next(self._ids), priority=INTERACTIVE))

    def load_model(self, path: str, device: str = "auto", **predictor_options) -> int:
        """Load a checkpoint in the worker (replaces the current model once it succeeds).

        `predictor_options` (plain values: tile_size, tile_overlap, tta...) go to the Predictor."""
        return self._submit(Job(JobKind.LOAD, next(self._ids), path=str(path), device=device,
                                options=predictor_options))

    def request(self, key: str, *, image: np.ndarray | None = None, path: str = "",
                priority: Priority = INTERACTIVE, crf: bool = False, crf_params=None, lut: np.ndarray | None = None,
                batch_id: int | None = None) -> int:
        """Ask for a proposal for image `key` (pass the pixels, or a path the worker reads)."""
        if image is None and not path:
            raise ValueError("a proposal request needs an image array or a path")
        if priority == INTERACTIVE:  # a new interactive request supersedes older ones for the same key
            self._cancel_where(lambda j: j.kind == JobKind.PREDICT and j.key == key and j.priority == INTERACTIVE)
        job = Job(JobKind.PREDICT, next(self._ids), key, image, str(path), priority, batch_id, crf, crf_params, lut)
        return self._submit(job)

    def start_batch(self, items: list[tuple[str, str]], *, crf: bool = False, crf_params=None,
                    lut: np.ndarray | None = None) -> int:
        """Queue (key, image path) pairs as one batch; returns the batch id."""
        batch_id = next(self._ids)
        self._batches[batch_id] = BatchState(batch_id, len(items))
        for key, path in items:
            self.request(key, path=path, priority=BATCH, crf=crf, crf_params=crf_params, lut=lut, batch_id=batch_id)
        if not items:
            self._finish_batch(batch_id, cancelled=False)
        return batch_id

    def correct(self, key: str, *, image: np.ndarray, labels: np.ndarray, edit_mask: np.ndarray,
                clicks: list[tuple[int, int, int]], lut: np.ndarray | None = None) -> int:
        """Click to correct image `key` (on screen): adapt the model to `clicks` (x, y, class; all of
        this image's so far) and re-propose every pixel `edit_mask` leaves free. An older click
        request for the image is cancelled; `correctionReady` brings the answer."""
        self._cancel_where(lambda j: j.kind == JobKind.CLICK and j.key == key)
        job = Job(JobKind.CLICK, next(self._ids), key, image, priority=INTERACTIVE, lut=lut, labels=labels,
                  edit_mask=edit_mask, clicks=tuple(tuple(int(v) for v in c) for c in clicks))
        self._latest_click[key] = job.request_id
        return self._submit(job)

    def start_review(self, items: list[tuple[str, str, np.ndarray | None, Callable[[], np.ndarray] | None]], *,
                     lut: np.ndarray | None = None) -> int:
        """Score (key, image path, labels or None, labels reader or None) items as one batch (batch
        priority; `reviewReady` per image, `batchProgress`/`batchFinished` as for proposals)."""
        batch_id = next(self._ids)
        self._batches[batch_id] = BatchState(batch_id, len(items))
        for key, path, labels, read in items:
            self._submit(Job(JobKind.REVIEW, next(self._ids), key, None, str(path), BATCH, batch_id, lut=lut,
                             labels=labels, read_labels=read))
        if not items:
            self._finish_batch(batch_id, cancelled=False)
        return batch_id

    def promote(self, key: str) -> bool:
        """Turn a queued or running pre-compute for `key` into an interactive request."""
        rid = self._latest.get(key)
        job = self._live.get(rid) if rid is not None else None
        if job is None or job.priority != PREFETCH:
            return False
        job.priority = INTERACTIVE
        return True

    def pending(self, key: str) -> bool:
        """Whether a proposal for `key` is queued or running."""
        return any(j.kind == JobKind.PREDICT and j.key == key for j in self._live.values())

    def set_current_key(self, key: str | None) -> None:
        """The user is now looking at `key`: interactive work for other images is cancelled."""
        self.current_key = key
        self._cancel_where(lambda j: j.kind in (JobKind.PREDICT, JobKind.CLICK) and j.priority == INTERACTIVE
                           and j.key != key)

    # --- cancelling ----------------------------------------------------------------------
    def _cancel_where(self, predicate) -> int:
        n = 0
        for job in self._queue.remove(predicate):
            self._live.pop(job.request_id, None)
            self._count_batch(job.batch_id, failed=False, cancelled=True)
            n += 1
        worker = self._worker
        running = worker.current if worker is not None else None
        if running is not None and predicate(running):
            running.cancelled.set()
            n += 1
        self._emit_idle()
        return n

    def cancel_batch(self, batch_id: int) -> None:
        state = self._batches.get(batch_id)
        if state is not None:
            state.total = state.done + state.failed  # nothing more is expected
        self._cancel_where(lambda j: j.batch_id == batch_id)
        if batch_id in self._batches and not any(j.batch_id == batch_id for j in self._live.values()):
            self._finish_batch(batch_id, cancelled=True)

    def cancel_request(self, request_id: int) -> bool:
        """Cancel one request (queued: dropped; running: stopped at its next tile)."""
        return self._cancel_where(lambda j: j.request_id == request_id) > 0

    def cancel_all(self) -> None:
        for batch_id in list(self._batches):
            self.cancel_batch(batch_id)
        self._cancel_where(lambda j: True)

    # --- results (queued from the worker thread) ----------------------------------------
    def _is_wanted(self, p: Proposal) -> bool:
        if self._latest.get(p.key) != p.request_id:
            return False
        return p.priority != INTERACTIVE or p.key == self.current_key

    def _answered(self, request_id: int, signal, payload, batch_id: int | None = None, *, failed: bool = False,
                  cancelled: bool = False) -> None:
        """A job ended: it is no longer live, `signal` carries `payload`, its batch (if any) counts
        it, and the client may have gone idle."""
        self._live.pop(request_id, None)
        signal.emit(payload)
        self._count_batch(batch_id, failed=failed, cancelled=cancelled)
        self._emit_idle()

    @Slot(object)
    def _on_result(self, p: Proposal) -> None:
        self._answered(p.request_id, self.proposalReady if self._is_wanted(p) else self.dropped, p, p.batch_id)

    @Slot(object)
    def _on_correction(self, c: Correction) -> None:
        wanted = self._latest_click.get(c.key) == c.request_id and c.key == self.current_key
        self._answered(c.request_id, self.correctionReady if wanted else self.dropped, c)

    @Slot(object)
    def _on_review(self, r: ReviewResult) -> None:
        self._answered(r.request_id, self.reviewReady if r.batch_id in self._batches else self.dropped, r, r.batch_id)

    @Slot(object)
    def _on_failed(self, f: JobFailure) -> None:
        if f.kind == JobKind.LOAD:
            self._answered(f.request_id, self.modelFailed, f.message)
        else:
            self._answered(f.request_id, self.failed, f, f.batch_id, failed=True)

    @Slot(object)
    def _on_cancelled(self, job: Job) -> None:
        self._answered(job.request_id, self.requestCancelled, job.request_id, job.batch_id, cancelled=True)

    @Slot(object)
    def _on_devices(self, devices: list) -> None:
        self._live = {k: j for k, j in self._live.items() if j.kind != JobKind.PROBE}
        self.devicesProbed.emit(devices)
        self._emit_idle()

    @Slot(object)
    def _on_model_loaded(self, info: ModelInfo) -> None:
        self.model = info
        self._answered(info.request_id, self.modelLoaded, info)

    def _count_batch(self, batch_id: int | None, *, failed: bool, cancelled: bool = False) -> None:
        state = self._batches.get(batch_id) if batch_id is not None else None
        if state is None:
            return
        if not cancelled:
            if failed:
                state.failed += 1
            else:
                state.done += 1
            rate, eta = state.rate_and_eta()
            self.batchProgress.emit(batch_id, state.done + state.failed, state.total, rate, eta)
        if not any(j.batch_id == batch_id for j in self._live.values()):
            self._finish_batch(batch_id, cancelled=cancelled or state.done + state.failed < state.total)

    def _finish_batch(self, batch_id: int, *, cancelled: bool) -> None:
        state = self._batches.pop(batch_id, None)
        if state is not None:
            self.batchFinished.emit(batch_id, state.done, state.failed, cancelled)

    def _emit_idle(self) -> None:
        if not self._live and self._was_busy:
            self._was_busy = False
            self.busyChanged.emit(False)
