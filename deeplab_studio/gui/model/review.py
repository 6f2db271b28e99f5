"""Review: find likely label errors, in the window.

Model → Find Likely Label Errors flushes the open image and scores every edited and reviewed image
in the inference worker (`InferenceClient.start_review`, batch priority, progress in the status
bar, Model → Stop Finding Label Errors cancels): the model's probabilities against the saved human
labels (`session.review`). Model → Next Suspicious Image (Ctrl+Shift+N) then steps through the
ranking, most suspicious first, and shows where the model disagrees (the canvas's extra layer, in a
colour no class has). Accept and Next Suspicious (Ctrl+Shift+Return) marks the image reviewed and
goes on; or fix the labels and step on. The maps are those of the labels as scored: run it again
after fixing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QObject, Signal

from deeplab_studio.gui.model.actions import make_action, make_toggle
from deeplab_studio.gui.model.assist_tool import AssistTool
from deeplab_studio.gui.model.uncertainty import OVERLAY_COLORS, contrasting_color
from deeplab_studio.gui.workers.inference_client import InferenceClient
from deeplab_studio.gui.workers.jobs import JobFailure, JobKind, ReviewResult
from deeplab_studio.session.review import ImageReview, ReviewQueue, review_items

MAP_BUDGET = 256 << 20  # bytes of disagreement maps kept (the most suspicious images' first)
SHOW_ABOVE = 0.5  # the overlay shows pixels where the model gives the human's label under 50 %


def disagreement_overlay(disagreement: np.ndarray, *, color: tuple[int, int, int] = (255, 0, 255),
                         above: float = SHOW_ABOVE) -> np.ndarray:
    """RGBA uint8 H×W×4: `color` where the disagreement (uint8, 1 − P × 255) exceeds `above`,
    more opaque the stronger it is."""
    d = disagreement.astype(np.float32) / 255.0
    alpha = np.clip((d - above) / max(1.0 - above, 1e-6), 0.0, 1.0)
    out = np.zeros(disagreement.shape + (4,), np.uint8)
    out[..., :3] = np.asarray(color, np.uint8)
    out[..., 3] = (alpha * 200.0 + 0.5).astype(np.uint8) * (alpha > 0)
    return out


class ReviewTool(AssistTool):
    """Scores, ranks and steps through likely label errors (see the module docstring)."""

    ranked = Signal(int)  # images ranked when a scoring run ended

    def __init__(self, link, client: InferenceClient, *, lut: Callable[[], np.ndarray | None],
                 require_model: Callable[[], bool], parent: QObject | None = None) -> None:
        super().__init__(link, client, lut=lut, require_model=require_model, parent=parent)
        self.queue = ReviewQueue()
        self.batch_id: int | None = None
        self._scores: dict[str, ImageReview] = {}
        self.maps: dict[str, np.ndarray] = {}  # key -> disagreement (uint8), within MAP_BUDGET
        self.act_find = make_action(self, "find_label_errors", "Find Likely Label Errors", self.find)
        self.act_stop = make_action(self, "stop_finding_label_errors", "Stop Finding Label Errors", self.stop)
        self.act_stop.setEnabled(False)
        self.act_next = make_action(self, "next_suspicious", "Next Suspicious Image", self.next_suspicious,
                                    shortcut="Ctrl+Shift+N")
        self.act_accept = make_action(self, "accept_and_next_suspicious", "Accept and Next Suspicious Image",
                                      self.accept_and_next, shortcut="Ctrl+Shift+Return")
        self.act_show = make_toggle(self, "show_label_disagreement", "Show Label Disagreement",
                                    lambda _on: self.refresh())
        client.reviewReady.connect(self._on_review)
        client.batchProgress.connect(self._on_progress)
        client.batchFinished.connect(self._on_finished)
        client.failed.connect(self._on_failed)

    def actions(self) -> list:
        return [self.act_find, self.act_stop, self.act_next, self.act_accept, self.act_show]

    # --- scoring -------------------------------------------------------------------------------
    def find(self) -> int | None:
        """Score every edited and reviewed image in the worker; returns the batch id."""
        project = self.link.project()
        if project is None or not self._require_model():
            return None
        self.stop()
        self.link.flush_saves()
        doc = self.link.document()
        items = [(it.key, it.image_path, doc.labels.copy() if doc is not None and doc.key == it.key else None,
                  it.read_labels) for it in review_items(project)]
        if not items:
            self.message.emit("No edited or reviewed images to check: label some first.")
            return None
        self._scores, self.maps = {}, {}
        self.batch_id = self.client.start_review(items, lut=self._lut())
        self.act_stop.setEnabled(True)
        self.message.emit(f"Looking for likely label errors in {len(items)} images…")
        return self.batch_id

    def stop(self) -> None:
        if self.batch_id is not None:
            self.client.cancel_batch(self.batch_id)

    def _on_review(self, r: ReviewResult) -> None:
        if r.batch_id != self.batch_id:
            return
        self._scores[r.key] = r.review
        self.maps[r.key] = r.disagreement
        self._trim_maps()

    def _trim_maps(self) -> None:
        """Keep the maps of the most suspicious images within `MAP_BUDGET` bytes."""
        total = sum(m.nbytes for m in self.maps.values())
        for key in sorted(self.maps, key=lambda k: self._scores[k].score):
            if total <= MAP_BUDGET:
                break
            total -= self.maps.pop(key).nbytes

    def _on_progress(self, batch_id: int, finished: int, total: int, rate: float, eta: float) -> None:
        if batch_id == self.batch_id:
            self.message.emit(f"Looking for likely label errors: {finished} of {total} images"
                              f" ({rate:.1f}/s, about {eta:.0f} s left)")

    def _on_finished(self, batch_id: int, done: int, failed: int, cancelled: bool) -> None:
        if batch_id != self.batch_id:
            return
        self.batch_id = None
        self.act_stop.setEnabled(False)
        self.queue.set(list(self._scores.values()))
        best = self.queue.ranked[0] if self.queue.ranked else None
        what = "stopped" if cancelled else "done"
        top = f"; most suspicious: {best.key} ({best.score:.2f}). Ctrl+Shift+N shows it." if best else "."
        skipped = f", {failed} could not be scored" if failed else ""
        self.message.emit(f"Label check {what}: {len(self.queue.ranked)} images ranked{skipped}{top}")
        self.ranked.emit(len(self.queue.ranked))

    def _on_failed(self, f: JobFailure) -> None:
        if f.kind == JobKind.REVIEW and f.batch_id == self.batch_id:
            self.message.emit(f"Skipped {f.key}: {f.message}")

    # --- stepping ------------------------------------------------------------------------------
    def next_suspicious(self) -> str | None:
        """Go to the most suspicious image not shown yet and show where the model disagrees."""
        if not self.queue.ranked:
            self.message.emit("No ranking yet: Model → Find Likely Label Errors first.")
            return None
        doc = self.link.document()
        key = self.queue.next_key(doc.key if doc is not None else None)
        if key is None:
            self.message.emit("No more suspicious images in this ranking.")
            return None
        self.act_show.setChecked(True)
        if doc is None or doc.key != key:
            self.link.go_to(key)
        self.refresh()
        self._say_where(key)
        return key

    def accept_and_next(self) -> str | None:
        """The labels on screen are right: mark the image reviewed, then the next suspicious one."""
        if self.link.document() is not None:
            self.link.session.mark_reviewed()
        return self.next_suspicious()

    def _say_where(self, key: str) -> None:
        r = self.queue.get(key)
        if r is None or r.worst is None:
            return
        labelset = self.link.labelset()
        value = r.worst.value
        name = labelset.names[value] if labelset is not None and value < len(labelset.names) else str(value)
        colour = OVERLAY_COLORS.get(self._color(), "the overlay colour")
        self.message.emit(f"Suspicious {self.queue.position(key)} of {len(self.queue.ranked)}: score {r.score:.2f};"
                          f" the model doubts a “{name}” region of {r.worst.pixels} pixels (in {colour})."
                          f" Fix it, or accept with Ctrl+Shift+Return ({self.queue.remaining()} more to see).")

    def _color(self) -> tuple[int, int, int]:
        doc = self.link.document()
        return contrasting_color(doc.labelset.colors) if doc is not None else (255, 0, 255)

    def refresh(self) -> bool:
        """Draw the disagreement of the image on screen when it is shown and known; True when drawn."""
        doc = self.link.document()
        dmap = self.maps.get(doc.key) if doc is not None else None
        if not self.act_show.isChecked() or dmap is None or dmap.shape != doc.labels.shape:
            return False
        self.link.set_extra_overlay(disagreement_overlay(dmap, color=self._color()))
        return True

    def project_changed(self) -> None:
        self.stop()
        self.queue = ReviewQueue()
        self._scores, self.maps = {}, {}


__all__ = ["MAP_BUDGET", "ReviewTool", "disagreement_overlay"]
