"""Click to correct the model, in the window: Ctrl+click (or a plain click while Model → Correct
with Clicks, K, is on) tells the model "this pixel is the active class".

Each click joins the clicks of the image on screen; all of them go to the inference worker
(`InferenceClient.correct`, interactive priority), which adapts the model to them
(`ml.click_correct`) and re-proposes every pixel no human painted. The answer is applied as one undo
step through `WindowLink.apply_proposal` (human pixels kept); pixels that changed while it ran keep
their new labels. A newer click cancels the older request and answers for an image the user left
are dropped. The clicks are forgotten when the image changes, the model changes, or with Model →
Forget Correction Clicks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt, Signal

from deeplab_studio.gui.model.actions import make_action, make_toggle
from deeplab_studio.gui.model.assist_tool import AssistTool
from deeplab_studio.gui.workers.inference_client import InferenceClient
from deeplab_studio.gui.workers.jobs import Correction, JobFailure, JobKind

IGNORE = 255


class ClickCorrection(AssistTool):
    """The clicks of the image on screen and their requests (see the module docstring)."""

    applied = Signal(str)  # image key: a correction landed as one undo step

    def __init__(self, link, client: InferenceClient, *, lut: Callable[[], np.ndarray | None],
                 require_model: Callable[[], bool], parent: QObject | None = None) -> None:
        super().__init__(link, client, lut=lut, require_model=require_model, parent=parent)
        self.clicks: list[tuple[int, int, int]] = []
        self.key: str | None = None  # the image the clicks belong to
        self.rid: int | None = None  # the request on its way
        self._before: np.ndarray | None = None  # the labels when it was sent
        self.act_mode = make_toggle(self, "correct_with_clicks", "Correct with Clicks (Ctrl+click)",
                                    self._on_mode, shortcut="K")
        self.act_clear = make_action(self, "forget_correction_clicks", "Forget Correction Clicks", self.clear)
        self.act_clear.setEnabled(False)
        self._viewport = link.canvas_viewport()
        self._viewport.installEventFilter(self)
        client.correctionReady.connect(self._on_correction)
        client.failed.connect(self._on_failed)
        client.requestCancelled.connect(self._on_ended)
        client.dropped.connect(lambda r: self._on_ended(r.request_id))

    def actions(self) -> list:
        return [self.act_mode, self.act_clear]

    # --- clicks --------------------------------------------------------------------------------
    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if obj is not self._viewport or event.type() != QEvent.Type.MouseButtonPress:
            return False
        if event.button() != Qt.MouseButton.LeftButton:
            return False
        mods = event.modifiers()
        ctrl = bool(mods & Qt.KeyboardModifier.ControlModifier)
        plain = not mods & (Qt.KeyboardModifier.AltModifier | Qt.KeyboardModifier.ShiftModifier)
        if not (ctrl or (self.act_mode.isChecked() and plain)) or self.link.document() is None:
            return False
        x, y = self.link.image_point(event.position())
        self.add_click(int(x // 1), int(y // 1))
        return True  # the click is the model's, not the active tool's

    def add_click(self, x: int, y: int, cls: int | None = None) -> int | None:
        """Add a click at image pixel (x, y) with class `cls` (default: the active class) and ask for
        the correction; returns the request id (None when nothing was asked)."""
        doc = self.link.document()
        if doc is None:
            return None
        if not (0 <= x < doc.width and 0 <= y < doc.height):
            return None
        if self.link.session.read_only:
            self.message.emit("This project is open read-only: clicks cannot change it.")
            return None
        if not self._require_model():
            return None
        value = int(self.link.session.tools.ctx.active_class if cls is None else cls)
        if value == IGNORE:
            self.message.emit("Choose a class to correct with (ignore says nothing to the model).")
            return None
        lut, info = self._lut(), self.client.model
        known = None if info is None else set(range(info.num_classes) if lut is None else lut[: info.num_classes].tolist())
        if known is not None and value not in known:
            self.message.emit(f"The model has no class that is “{self.link.session.class_name(value)}”: "
                              "clicks can only ask for classes it knows.")
            return None
        if self.key != doc.key:
            self.clear()
            self.key = doc.key
        self.clicks.append((x, y, value))
        self.act_clear.setEnabled(True)
        self._before = doc.labels.copy()
        self.rid = self.client.correct(doc.key, image=doc.image, labels=self._before, edit_mask=doc.edit_mask.copy(),
                                       clicks=self.clicks, lut=self._lut())
        name = self.link.session.class_name(value)
        self.message.emit(f"Correcting with {len(self.clicks)} click(s) (last: {name})…")
        return self.rid

    def clear(self) -> None:
        """Forget the clicks (a running request is cancelled; what was applied stays)."""
        if self.rid is not None:
            self.client.cancel_request(self.rid)
        self.clicks, self.key, self.rid, self._before = [], None, None, None
        self.act_clear.setEnabled(False)

    def image_changed(self) -> None:
        doc = self.link.document()
        if self.key is not None and (doc is None or doc.key != self.key):
            self.clear()

    def _on_mode(self, on: bool) -> None:
        self.message.emit("Correct with clicks: click where the model is wrong, with the class it should be"
                          " (the active class). K turns it off; Ctrl+click works any time." if on else
                          "Correct with clicks is off (Ctrl+click still corrects).")

    # --- answers -------------------------------------------------------------------------------
    def _on_correction(self, c: Correction) -> None:
        doc = self.link.document()
        if c.request_id != self.rid or doc is None or doc.key != c.key:
            return
        before, self.rid, self._before = self._before, None, None
        if c.labels.shape != doc.labels.shape:
            return
        changed = doc.labels != before  # painted while the model worked: the newer labels win
        merged = np.where(changed, doc.labels, c.labels).astype(np.uint8)
        moved = int(np.count_nonzero(merged != doc.labels))
        self.link.apply_proposal(merged, "Correct with clicks", mark_auto=True)
        features = f" + {c.features_seconds:.2f} s features" if c.features_seconds else ""
        self.message.emit(f"Corrected with {c.clicks} click(s): {moved} pixels changed, "
                          f"{c.won}/{c.clicks} clicks won, {c.steps} steps, {c.seconds - c.features_seconds:.2f} s"
                          f"{features}.")
        self.applied.emit(c.key)

    def _on_failed(self, f: JobFailure) -> None:
        if f.kind == JobKind.CLICK and f.request_id == self.rid:
            self.rid = None
            if self.clicks:
                self.clicks.pop()  # the click that failed does not stay to fail again
            self.link.show_error("Correct with clicks failed", f.message)

    def _on_ended(self, request_id: int) -> None:
        if request_id == self.rid:
            self.rid = None


__all__ = ["ClickCorrection"]
