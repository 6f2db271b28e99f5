"""Every main-window method the model-in-the-loop modules use, in one place.

The model controller, CRF panel, model dialog and demo attach to the window from outside
(napari style). They never reach into the window's widgets; they call this thin link, which
names the window's public API it relies on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QLabel, QWidget

from deeplab_studio.core.labels import LabelSet

AUTO_STATUSES = ("unlabeled", "auto")


def _status_name(status) -> str:
    return str(getattr(status, "value", status))


class WindowLink:
    def __init__(self, window) -> None:
        self.window = window
        self._model_label: QLabel | None = None

    # --- state -------------------------------------------------------------------------------
    def project(self):
        return getattr(self.window, "project", None)

    def document(self):
        """The current AnnotationDocument (image, labels, edit_mask, key) or None."""
        return getattr(self.window, "document", None)

    def labelset(self) -> LabelSet | None:
        project = self.project()
        return project.labels if project is not None else None

    def data_dir(self):
        project = self.project()
        return getattr(project, "data_dir", None) if project is not None else None

    def records(self) -> list:
        project = self.project()
        return list(project.records) if project is not None else []

    def record(self, key: str):
        project = self.project()
        if project is None:
            return None
        try:
            return project.record(key)
        except KeyError:
            return None

    def record_status(self, key: str) -> str | None:
        rec = self.record(key)
        return _status_name(rec.status) if rec is not None else None

    def project_has_labels(self) -> bool:
        return any(_status_name(r.status) != "unlabeled" for r in self.records())

    def batch_items(self, statuses: tuple[str, ...] = AUTO_STATUSES) -> list[tuple[str, str]]:
        """(key, image path) of every image whose status is in `statuses` (and unlabeled or auto)."""
        project = self.project()
        wanted = set(statuses) & set(AUTO_STATUSES)
        return [(r.path, str(project.image_path(r))) for r in self.records() if _status_name(r.status) in wanted]

    def unreviewed_keys(self) -> list[str]:
        return [r.path for r in self.records() if _status_name(r.status) != "reviewed"]

    def next_key_and_path(self) -> tuple[str, str] | None:
        """The image after the current one in the project's order."""
        doc, recs = self.document(), self.records()
        if doc is None or not recs:
            return None
        keys = [r.path for r in recs]
        try:
            i = keys.index(doc.key)
        except ValueError:
            return None
        if i + 1 >= len(recs):
            return None
        return keys[i + 1], str(self.project().image_path(recs[i + 1]))

    # --- changes -----------------------------------------------------------------------------
    def apply_proposal(self, labels: np.ndarray, text: str, *, mark_auto: bool = False) -> bool:
        """One undoable command writing `labels` except on human pixels. With `mark_auto` (a model
        proposal) an unlabeled image becomes `auto` even when the proposal is all background;
        otherwise the status is derived when saved (auto, or edited when a human painted)."""
        from deeplab_studio.storage.project import Status

        doc = self.document()
        status = self.record_status(doc.key) if doc is not None else None
        auto = Status.AUTO if mark_auto and status in AUTO_STATUSES else None
        return bool(self.window.apply_labels(labels, text=text, status=auto))

    def merge_into_saved(self, key: str, proposal: np.ndarray) -> None:
        """A proposal for an image that is not open: merge it into the saved label map."""
        self.window.merge_proposal_into_saved(key, proposal)

    def annotation_saved_elsewhere(self, key: str) -> None:
        """The worker replaced the saved map of `key`: drop its undo history, refresh its status."""
        fn = getattr(self.window, "annotation_saved_elsewhere", None)
        if fn is not None:
            fn(key)
            return
        project = self.project()  # fallback until the window offers the method
        rec = self.record(key)
        if project is None or rec is None:
            return
        self.window.undo.drop(key)
        self.window.image_panel.set_status(project.records.index(rec), _status_name(rec.status))

    def set_labelset(self, labelset: LabelSet) -> None:
        self.window.set_labelset(labelset)

    def go_to(self, key: str) -> None:
        self.window.go_to(key)

    def set_extra_overlay(self, rgba: np.ndarray | None) -> None:
        self.window.set_extra_overlay(rgba)

    # --- chrome ------------------------------------------------------------------------------
    def add_menu(self, title: str, actions: list) -> None:
        menu = getattr(self.window, "model_menu", None)
        if menu is None:
            menu = self.window.menuBar().addMenu(title)
        else:
            menu.clear()  # the window's "No model loaded" placeholder
        for act in actions:
            if act is None:
                menu.addSeparator()
            else:
                menu.addAction(act)
                self.window.addAction(act)  # shortcuts work even with the menu closed

    def add_status_widget(self, widget: QWidget) -> None:
        self.window.statusBar().addPermanentWidget(widget)

    def set_model_status(self, text: str, tooltip: str = "") -> None:
        if self._model_label is None:
            self._model_label = QLabel()
            self._model_label.setObjectName("modelStatus")
            self.window.statusBar().addPermanentWidget(self._model_label)
        self._model_label.setText(text)
        self._model_label.setToolTip(tooltip)

    def show_message(self, text: str, msec: int = 5000) -> None:
        self.window.statusBar().showMessage(text, msec)

    def show_warning(self, text: str) -> None:
        """A non-modal warning in the window's banner (e.g. the model moved to the CPU)."""
        self.window.show_message(text, "warning")

    def show_error(self, title: str, text: str) -> None:
        """A non-modal message in the window (its banner); the app goes on."""
        self.window.show_error(title, text)

    def add_dock(self, widget: QWidget, title: str = "CRF") -> QDockWidget:
        dock = QDockWidget(title, self.window)
        dock.setObjectName(f"dock_{title}")
        dock.setWidget(widget)
        self.window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        return dock

    # --- events ------------------------------------------------------------------------------
    def on_image_changed(self, callback: Callable) -> None:
        self.window.imageChanged.connect(callback)

    def on_project_changed(self, callback: Callable) -> None:
        self.window.projectChanged.connect(callback)

    def on_close(self, callback: Callable) -> None:
        self.window.closing.connect(callback)
