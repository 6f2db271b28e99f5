"""CRF panel: the dense CRF's parameters as sliders, a debounced live preview, Apply / Revert.

Moving a slider restarts a short timer; when it fires, `refine_labels` runs on the current label
map on the model controller's job pool (human pixels protected); the canvas shows the pixels it
would change in their new class colour, the panel a thumbnail of the result and how many pixels
would change. Apply writes it as one undoable command and keeps the parameters for later
proposals and Snap to edges; Revert drops the preview and returns the sliders to the last
applied parameters. Until something is applied the sliders start at the loaded model's own
setting (its card's, e.g. the bundled VOC model's), which proposals and Snap to edges use then.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QFormLayout, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QSlider,
                               QVBoxLayout, QWidget)

from deeplab_studio.gui.model.proposal_flow import refine_job

DEBOUNCE_MS = 300
PREVIEW_SIDE = 320

# field, label, minimum, maximum, scale (slider int / scale = value)
SLIDERS: tuple[tuple[str, str, float, float, int], ...] = (
    ("iterations", "Iterations", 1, 15, 1),
    ("bilateral_compat", "Edge weight", 0, 15, 2),
    ("bilateral_sxy", "Edge range (px)", 5, 150, 1),
    ("bilateral_srgb", "Colour tolerance", 1, 30, 1),
    ("gaussian_compat", "Smoothness weight", 0, 10, 2),
    ("gaussian_sxy", "Smoothness range (px)", 1, 10, 2),
    ("hard_confidence", "Trust in labels", 0.5, 0.99, 100),
)


def _default_params():
    from deeplab_studio.ml.crf import CRFParams

    return CRFParams()


def changed_pixels_rgba(labels: np.ndarray, changed: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """RGBA H×W×4 for the canvas: the new class colour, opaque, only where the CRF would change a pixel."""
    out = np.zeros(labels.shape + (4,), np.uint8)
    out[changed, :3] = palette[labels[changed]]
    out[changed, 3] = 230
    return out


class CRFPanel(QWidget):
    previewReady = Signal(int)  # changed pixel count
    applied = Signal()

    def __init__(self, controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.link = controller.link
        self.applied_params = controller.crf_setting() or _default_params()
        self.preview: np.ndarray | None = None  # the refined label map on show
        self.preview_key: str | None = None  # the image it is for
        self.preview_base: np.ndarray | None = None  # the labels it was computed from
        self._serial = 0
        self.sliders: dict[str, QSlider] = {}
        self._values: dict[str, QLabel] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.run_preview)
        self._build()
        self.set_params(self.applied_params)
        self._doc = None
        self._watch(self.link.document())
        self.link.on_image_changed(self._on_image_changed)

    def _build(self) -> None:
        form = QFormLayout()
        for name, title, lo, hi, scale in SLIDERS:
            s = QSlider(Qt.Orientation.Horizontal)
            s.setRange(int(round(lo * scale)), int(round(hi * scale)))
            s.valueChanged.connect(self._on_slider)
            value = QLabel()
            value.setMinimumWidth(36)
            row = QHBoxLayout()
            row.addWidget(s, 1)
            row.addWidget(value)
            form.addRow(title, row)
            self.sliders[name], self._values[name] = s, value
        self.preview_label = QLabel("Move a slider to preview the CRF on this image.")
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview_label.setMinimumHeight(120)
        self.preview_label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setMinimumHeight(2 * self.info.fontMetrics().lineSpacing())  # no jump at two-line texts
        self.apply_button = QPushButton("Apply")
        self.revert_button = QPushButton("Revert")
        self.defaults_button = QPushButton("Defaults")
        self.apply_button.clicked.connect(self.apply)
        self.revert_button.clicked.connect(self.revert)
        self.defaults_button.clicked.connect(lambda: (self.set_params(_default_params()), self._on_slider()))
        self.apply_button.setEnabled(False)
        buttons = QHBoxLayout()
        for b in (self.apply_button, self.revert_button, self.defaults_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.preview_label, 1)
        layout.addWidget(self.info)
        layout.addLayout(buttons)

    # --- parameters --------------------------------------------------------------------------
    def set_params(self, params) -> None:
        for name, _, _, _, scale in SLIDERS:
            s = self.sliders[name]
            s.blockSignals(True)
            s.setValue(int(round(getattr(params, name) * scale)))
            s.blockSignals(False)
            self._show_value(name)
        self._base = params

    def params(self):
        values = {}
        for name, _, _, _, scale in SLIDERS:
            v = self.sliders[name].value() / scale
            values[name] = int(v) if name == "iterations" else float(v)
        return replace(self._base, **values)

    def _show_value(self, name: str) -> None:
        scale = next(s for n, *_, s in SLIDERS if n == name)
        v = self.sliders[name].value() / scale
        self._values[name].setText(f"{v:g}")

    def _on_slider(self, *_) -> None:
        for name in self.sliders:
            self._show_value(name)
        self._timer.start()  # debounce: restart on every move

    # --- preview -----------------------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Opening the panel previews the current parameters at once (no slider nudge needed)."""
        super().showEvent(event)
        if self.preview is None:
            self._timer.start()

    def _watch(self, doc) -> None:
        """Follow the label map of `doc` (the live preview is recomputed when it changes)."""
        if self._doc is not None:
            self._doc.changed.disconnect(self._on_labels_changed)
            self._doc.reset.disconnect(self._on_labels_changed)
        self._doc = doc
        if doc is not None:
            doc.changed.connect(self._on_labels_changed)
            doc.reset.connect(self._on_labels_changed)

    def _on_image_changed(self, *_) -> None:
        """Another image: the old preview is void; a visible panel previews the new image."""
        self._watch(self.link.document())
        self._restart("Computing preview…")

    def _on_labels_changed(self, *_) -> None:
        """Painting, a proposal or undo changed the labels: the preview is stale (called per stamp: cheap)."""
        if self.preview is not None:
            self.controller.refresh_overlay()  # the stale changed-pixels layer goes
        if self.preview is not None or self._timer.isActive() or self.isVisible():
            self._restart("The labels changed; computing the preview again…")

    def preview_pending(self) -> bool:
        """Whether a preview run is scheduled (the debounce timer is running)."""
        return self._timer.isActive()

    def _restart(self, text: str) -> None:
        self._serial += 1  # a preview still running is for the old labels
        self.preview, self.preview_key, self.preview_base = None, None, None
        self.preview_label.clear()
        self.apply_button.setEnabled(False)
        if self.isVisible():
            self.info.setText(text)
            self._timer.start()  # debounced: one CRF run after the last change
        else:
            self._timer.stop()
            self.info.setText("")

    def run_preview(self) -> None:
        """Refine the current label map with the sliders' parameters (on the controller's job pool)."""
        doc = self.link.document()
        if doc is None:
            return
        self._serial += 1
        token = (self._serial, doc.key, doc.labels.copy())
        self.info.setText("Computing preview…")
        self.controller.jobs.start(refine_job, doc.image, doc.labels.copy(), doc.edit_mask.copy(), self.params(),
                                   self.controller.crf_sessions(), on_result=lambda r: self._on_preview(token, r),
                                   on_error=lambda e: self._on_preview(token, e))

    def _on_preview(self, token: tuple, result: np.ndarray | BaseException) -> None:
        serial, key, before = token
        doc = self.link.document()
        if serial != self._serial or doc is None or doc.key != key:
            return
        if isinstance(result, BaseException):
            self.info.setText(f"CRF failed: {result}")
            return
        if not np.array_equal(doc.labels, before):  # the user painted meanwhile: recompute
            self._timer.start()
            return
        self.preview, self.preview_key, self.preview_base = result, key, before
        diff = result != doc.labels
        changed = int(np.count_nonzero(diff))
        size = self.preview_label.size()
        self.preview_label.setPixmap(self._thumbnail(doc, result).scaled(
            max(size.width() - 4, 32), max(size.height() - 4, 32), Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.FastTransformation))
        self.link.set_extra_overlay(changed_pixels_rgba(result, diff, doc.labelset.palette()))
        self.info.setText(f"{changed} pixels would change ({100.0 * changed / result.size:.2f} %).")
        self.apply_button.setEnabled(changed > 0)
        self.previewReady.emit(changed)

    def _thumbnail(self, doc, labels: np.ndarray) -> QPixmap:
        h, w = labels.shape
        step = max(1, int(np.ceil(max(h, w) / PREVIEW_SIDE)))
        img = doc.image[::step, ::step].astype(np.uint16)
        colors = doc.labelset.colorize(labels[::step, ::step]).astype(np.uint16)
        obj = (labels[::step, ::step] != 0)[..., None]
        blend = np.where(obj, (img + colors) // 2, img).astype(np.uint8)
        blend = np.ascontiguousarray(blend)
        qimg = QImage(blend.data, blend.shape[1], blend.shape[0], blend.strides[0], QImage.Format.Format_RGB888)
        return QPixmap.fromImage(qimg.copy())

    # --- apply / revert ----------------------------------------------------------------------
    def apply(self) -> bool:
        """Write the preview as one undoable command and keep its parameters."""
        doc = self.link.document()
        if self.preview is None or doc is None:
            return False
        if doc.key != self.preview_key or not np.array_equal(doc.labels, self.preview_base):
            self.info.setText("The image changed since the preview; computing it again.")
            self._timer.start()
            return False
        self.applied_params = self.params()
        self.controller.crf_params = self.applied_params
        self._watch(None)  # our own write is not a change to preview again
        try:
            self.link.apply_proposal(self.preview, "CRF refine")
        finally:
            self._watch(doc)
        self._clear_preview("Applied. These parameters are used for proposals and Snap to edges.")
        self.applied.emit()
        return True

    def model_changed(self) -> None:
        """Another model: until parameters are applied here, the sliders show the model's own."""
        if self.controller.crf_params is None:
            self.applied_params = self.controller.crf_setting() or _default_params()
            self.set_params(self.applied_params)
            self._restart("The model changed; computing the preview again…")

    def revert(self) -> None:
        """Drop the preview and go back to the last applied parameters."""
        self._timer.stop()
        self._serial += 1
        self.set_params(self.applied_params)
        self._clear_preview("Reverted to the applied parameters.")

    def _clear_preview(self, text: str) -> None:
        if self.preview is not None:
            self.controller.refresh_overlay()  # back to the uncertainty overlay (or none)
        self.preview, self.preview_key, self.preview_base = None, None, None
        self.preview_label.clear()
        self.preview_label.setText("Move a slider to preview the CRF on this image.")
        self.info.setText(text)
        self.apply_button.setEnabled(False)
