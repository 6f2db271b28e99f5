"""The proposals of the model in the loop: Ctrl+R, "Auto-segment all", pre-compute, Snap to edges.

`ProposalFlow` asks the `InferenceClient` for label maps and puts the answers where they belong:

- Ctrl+R: a proposal for the current image fills only pixels no human painted, as one undoable
  command (`WindowLink.apply_proposal`); a large (tiled) image shows Cancel while it runs.
- Auto-segment all: every `unlabeled`/`auto` image as a batch (status-bar progress, Cancel). The
  worker only returns arrays: a result for the image on screen is applied like Ctrl+R, any other
  is handed to the session (`WindowLink.merge_into_saved`), which merges it into the saved label
  map with the human-pixels-win rule and saves it on its own I/O thread.
- Pre-compute: the next image's proposal is asked for ahead of time; Ctrl+R then applies it at once.
- Snap to edges: the CRF refines the current label map on the owner's `JobPool`, human pixels kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from deeplab_studio.gui.workers.background_jobs import JobPool, TaskWorker
from deeplab_studio.gui.model.batch_status import BatchStatus
from deeplab_studio.gui.workers.inference_client import InferenceClient
from deeplab_studio.gui.workers.jobs import BATCH, INTERACTIVE, PREFETCH, JobFailure, JobKind, Proposal
from deeplab_studio.gui.model.uncertainty import UncertaintyStore
from deeplab_studio.storage.records import Status

MAX_PREFETCHED = 3
AUTO_STATUSES = (Status.UNLABELED, Status.AUTO)


@dataclass(frozen=True)
class ProposalOptions:
    """How proposals are made right now (read when a request is sent)."""

    crf: bool  # refine with the dense CRF
    crf_params: Any = None  # ml.crf.CRFParams chosen in the CRF panel; None: the model's own setting
    lut: np.ndarray | None = None  # model class -> project class, None for the identity
    snap_params: Any = None  # what Snap to edges uses: the panel's parameters, else the model's (None: defaults)


def refine_job(task: TaskWorker, image: np.ndarray, labels: np.ndarray, protect: np.ndarray,
               params: Any, lender: Any = None) -> np.ndarray:
    """`labels` snapped to the edges of `image` by the CRF, pixels in `protect` kept (pool thread).
    With `lender` (`ml.crf.SessionLender`) the image's CRF kernels are kept for the next call."""
    from deeplab_studio.ml.crf import refine_labels

    if lender is None:
        return refine_labels(image, labels, protect=protect, params=params, cancel=task.cancelled)
    with lender.lend(image) as session:
        return session.refine_labels(labels, protect=protect, params=params, cancel=task.cancelled)


class ProposalFlow(QObject):
    """Requests proposals and applies or stores their answers (see the module docstring)."""

    proposalApplied = Signal(str)  # image key: applied to the open image or stored by the session
    snapApplied = Signal(str)
    batchSaved = Signal()  # a batch ended and every proposal it stored is saved
    cancelAvailable = Signal(bool)  # a batch or a tiled Ctrl+R runs: Cancel makes sense
    message = Signal(str)

    def __init__(self, link, client: InferenceClient, uncertainty: UncertaintyStore, jobs: JobPool, *,
                 options: Callable[[], ProposalOptions], require_model: Callable[[], bool],
                 precompute: Callable[[], bool], refresh_overlay: Callable[[], None],
                 crf_sessions: Callable[[], Any] = lambda: None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.link, self.client, self.uncertainty, self.jobs = link, client, uncertainty, jobs
        self._crf_sessions = crf_sessions  # the SessionLender that Snap to edges shares with the CRF panel
        self._options, self._require_model = options, require_model
        self._precompute, self._refresh_overlay = precompute, refresh_overlay
        self.prefetched: dict[str, Proposal] = {}  # pre-computed proposals by image key (oldest first)
        self.batch_id: int | None = None
        self.segment_rid: int | None = None  # the current Ctrl+R request (for its tile progress)
        self._storing: set[str] = set()  # batch results the session is merging into saved maps
        self._batch_done = False  # the batch ended; `batchSaved` once `_storing` is empty
        self._snap_serial = 0
        self._closed = False
        self.batch_status = BatchStatus(link, self.cancel, self.message.emit)
        client.proposalReady.connect(self._on_proposal)
        client.failed.connect(self._on_failed)
        client.batchProgress.connect(self._on_batch_progress)
        client.batchFinished.connect(self._on_batch_finished)
        client.tileProgress.connect(self._on_tile_progress)
        for sig in (client.proposalReady, client.dropped, client.failed):
            sig.connect(lambda r: self._segment_ended(r.request_id))
        client.requestCancelled.connect(self._segment_ended)
        link.session.status_changed.connect(self._on_status_changed)

    # --- Ctrl+R --------------------------------------------------------------------------------
    def auto_segment(self) -> int | None:
        """Propose labels for the current image (a pre-computed one is applied at once)."""
        doc = self.link.document()
        if doc is None or not self._require_model():
            return None
        cached = self.prefetched.pop(doc.key, None)
        if cached is not None:
            self._apply_to_document(cached)
            return cached.request_id
        if self.client.promote(doc.key):
            self.message.emit("Auto-segmenting (pre-compute already running)…")
            return None
        self.message.emit("Auto-segmenting…")
        self.segment_rid = self._request(doc.key, INTERACTIVE, image=doc.image)
        return self.segment_rid

    def _request(self, key: str, priority, **where) -> int:
        o = self._options()
        return self.client.request(key, priority=priority, crf=o.crf, crf_params=o.crf_params, lut=o.lut, **where)

    def _on_tile_progress(self, request_id: int, done: int, total: int) -> None:
        if request_id == self.segment_rid and done < total:  # a large image: show it moves, offer Cancel
            self.message.emit(f"Auto-segmenting… tile {done + 1} of {total}")
            self._sync_cancel(True)

    def _segment_ended(self, request_id: int | None) -> None:
        if request_id is not None and request_id == self.segment_rid:
            self.segment_rid = None
            self._sync_cancel()

    def _sync_cancel(self, long_segment: bool = False) -> None:
        on = self.batch_id is not None or long_segment
        self.batch_status.cancel_button.setVisible(on)
        self.cancelAvailable.emit(on)

    def cancel(self) -> None:
        """Stop the batch and a running Ctrl+R (between tiles)."""
        rid = self.segment_rid
        if rid is not None:
            self.client.cancel_request(rid)
            self._segment_ended(rid)
            self.message.emit("Auto-segment cancelled.")
        self.cancel_batch()

    def image_changed(self) -> None:
        """Another image is on screen: the running Ctrl+R is no longer wanted; pre-compute the next."""
        self._segment_ended(self.segment_rid)
        doc = self.link.document()
        self.client.set_current_key(doc.key if doc is not None else None)
        self.precompute_next()

    def project_changed(self) -> None:
        self.prefetched.clear()
        self._storing.clear()
        self.cancel_batch()

    def close(self) -> None:
        """The window closes: answers still on their way are ignored, nothing more is stored."""
        self._closed = True
        self.cancel_batch()

    # --- batches -------------------------------------------------------------------------------
    def auto_segment_all(self, statuses: tuple[str, ...] = AUTO_STATUSES) -> int | None:
        """Queue every image whose status is in `statuses` as one batch; returns the batch id.
        Only `unlabeled` and `auto` images qualify: human-edited ones are never re-proposed."""
        if not self._require_model():
            return None
        items = self.link.batch_items(tuple(Status(s).value for s in statuses))
        self.cancel_batch()
        o = self._options()
        self._batch_done = False
        self.batch_id = self.client.start_batch(items, crf=o.crf, crf_params=o.crf_params, lut=o.lut)
        if items:
            self.batch_status.start(len(items))
            self.cancelAvailable.emit(True)
        else:
            self.message.emit("No unlabeled or auto images to segment.")
        return self.batch_id

    def cancel_batch(self) -> None:
        if self.batch_id is not None:
            self.client.cancel_batch(self.batch_id)

    def _on_batch_progress(self, batch_id: int, finished: int, total: int, rate: float, eta: float) -> None:
        if batch_id == self.batch_id:
            self.batch_status.update(finished, total, rate, eta)

    def _on_batch_finished(self, batch_id: int, done: int, failed: int, cancelled: bool) -> None:
        if batch_id != self.batch_id:
            return
        self.batch_id = None
        self.batch_status.finish()
        self.cancelAvailable.emit(False)
        self.uncertainty.save()
        what = "cancelled" if cancelled else "finished"
        self.message.emit(f"Auto-segment all {what}: {done} images proposed, {failed} failed.")
        self._batch_done = True
        self._check_batch_saved()

    def _on_status_changed(self, key: str) -> None:
        if key in self._storing:
            self._storing.discard(key)
            self.proposalApplied.emit(key)
            self._check_batch_saved()

    def _check_batch_saved(self) -> None:
        if self._batch_done and not self._storing:
            self._batch_done = False
            self.batchSaved.emit()

    # --- answers -------------------------------------------------------------------------------
    def _on_proposal(self, p: Proposal) -> None:
        if self._closed:
            return
        self.uncertainty.put(p.key, p.confidence)
        doc = self.link.document()
        on_screen = doc is not None and doc.key == p.key
        if p.priority == PREFETCH and not on_screen:
            self.prefetched[p.key] = p
            while len(self.prefetched) > MAX_PREFETCHED:  # bounded memory: oldest first out
                self.prefetched.pop(next(iter(self.prefetched)))
        elif on_screen:
            self._apply_to_document(p)
        elif p.priority == BATCH:
            self._storing.add(p.key)  # `status_changed(key)` tells when it is saved
            self.link.merge_into_saved(p.key, p.labels)

    def _apply_to_document(self, p: Proposal) -> None:
        doc = self.link.document()
        if p.labels.shape != doc.labels.shape:
            self.link.show_error("Proposal skipped", f"{p.key}: the image size changed while it was predicted.")
            return
        self.link.apply_proposal(p.labels, "Auto-segment", mark_auto=True)
        self._refresh_overlay()
        how = " + CRF" if p.refined else ""
        self.message.emit(f"Proposal{how} in {p.seconds:.2f} s; mean uncertainty {p.mean_uncertainty:.2f}")
        self.proposalApplied.emit(p.key)
        self.precompute_next()

    def _on_failed(self, f: JobFailure) -> None:
        if f.kind != JobKind.PREDICT:  # click corrections and review scoring say their own failures
            return
        if f.batch_id is not None or f.priority == PREFETCH:  # background work: a note, not a banner
            self.message.emit(f"Skipped {f.key}: {f.message}")
            return
        self.link.show_error("Auto-segment failed", f"{f.key}: {f.message}" if f.key else f.message)

    # --- pre-compute ---------------------------------------------------------------------------
    def precompute_next(self) -> None:
        """Ask for the next image's proposal ahead of time (when switched on and it is unreviewed)."""
        if not self._precompute() or self.client.model is None:
            return
        nxt = self.link.next_key_and_path()
        if nxt is None or nxt[0] in self.prefetched or self.client.pending(nxt[0]):
            return
        key, path = nxt
        if self.link.record_status(key) in AUTO_STATUSES:
            self._request(key, PREFETCH, path=path)

    # --- Snap to edges -------------------------------------------------------------------------
    def snap_to_edges(self) -> TaskWorker | None:
        """Refine the current label map with the CRF, human pixels kept (on the job pool)."""
        doc = self.link.document()
        if doc is None:
            return None
        self._snap_serial += 1
        token = (self._snap_serial, doc.key, doc.labels.copy())
        self.message.emit("Snapping to edges…")
        return self.jobs.start(refine_job, doc.image, doc.labels.copy(), doc.edit_mask.copy(),
                               self._options().snap_params, self._crf_sessions(),
                               on_result=lambda r: self._on_snap_done(token, r),
                               on_error=lambda e: self._on_snap_done(token, e))

    def _on_snap_done(self, token: tuple, result: np.ndarray | BaseException) -> None:
        serial, key, before = token
        doc = self.link.document()
        if self._closed or serial != self._snap_serial or doc is None or doc.key != key:
            return
        if isinstance(result, BaseException):
            self.link.show_error("Snap to edges failed", str(result))
            return
        changed = doc.labels != before  # pixels that changed while the CRF ran win over its answer
        merged = np.where(changed, doc.labels, result).astype(np.uint8)
        moved = int(np.count_nonzero(merged != doc.labels))
        self.link.apply_proposal(merged, "Snap to edges")
        self.message.emit(f"Snapped to edges: {moved} pixels changed." if moved else
                          "Snap to edges changed nothing (the labels already follow the edges).")
        self.snapApplied.emit(key)


__all__ = ["AUTO_STATUSES", "MAX_PREFETCHED", "ProposalFlow", "ProposalOptions", "refine_job"]
