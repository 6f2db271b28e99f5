"""The one door between the main window and the modules that attach to it from outside (the
model controller, CRF panel, model dialog, training tools, demo; napari style).

State and user intentions go to the window's Qt-free `AnnotationSession` (`link.session`);
window chrome (menus through the action registry, docks, status widgets, the banner) goes
through the methods here. Nothing else of the window is reached.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDockWidget, QLabel, QWidget

from deeplab_studio.core.labels import LabelSet
from deeplab_studio.session.annotation_session import AnnotationSession
from deeplab_studio.storage.records import Status

AUTO_STATUSES = (Status.UNLABELED, Status.AUTO)


class WindowLink:
    def __init__(self, window) -> None:
        self.window = window
        self.session: AnnotationSession = window.session
        self._model_label: QLabel | None = None
        self._placeholder_removed = False

    # --- state -------------------------------------------------------------------------------
    def project(self):
        return self.session.project

    def document(self):
        """The current AnnotationDocument (image, labels, edit_mask, key) or None."""
        return self.session.document

    def labelset(self) -> LabelSet | None:
        project = self.session.project
        return project.labels if project is not None else None

    def data_dir(self):
        project = self.session.project
        return project.data_dir if project is not None else None

    def project_folder(self) -> str | None:
        project = self.session.project
        return str(project.folder) if project is not None else None

    def records(self) -> list:
        return self.session.records

    def record(self, key: str):
        index = self.session.find(key)
        return self.session.project.records[index] if index is not None else None

    def record_status(self, key: str) -> Status | None:
        rec = self.record(key)
        return rec.status if rec is not None else None

    def batch_items(self, statuses: tuple[str, ...] = AUTO_STATUSES) -> list[tuple[str, str]]:
        """(key, image path) of every image whose status is in `statuses` (and unlabeled or auto)."""
        project = self.session.project
        wanted = {Status(s) for s in statuses} & set(AUTO_STATUSES)
        return [(r.path, str(project.image_path(r))) for r in self.records() if r.status in wanted]

    def unreviewed_keys(self) -> list[str]:
        return [r.path for r in self.records() if r.status != Status.REVIEWED]

    def next_key_and_path(self) -> tuple[str, str] | None:
        """The image after the current one in the project's order."""
        doc, project = self.session.document, self.session.project
        index = self.session.find(doc.key) if doc is not None else None
        recs = project.records if project is not None else []
        if index is None or index + 1 >= len(recs):
            return None
        return recs[index + 1].path, str(self.session.project.image_path(recs[index + 1]))

    def settings(self) -> QSettings:
        return self.window.settings

    def parent_widget(self) -> QWidget:
        """The window, as the parent of dialogs."""
        return self.window

    def message_text(self) -> str:
        """The message the window's banner shows now ("" when none)."""
        return self.window.banner.text()

    # --- changes -----------------------------------------------------------------------------
    def flush_saves(self) -> bool:
        """Save the open image now (e.g. before training reads the project from disk)."""
        return self.session.saver.flush()

    def apply_proposal(self, labels: np.ndarray, text: str, *, mark_auto: bool = False) -> bool:
        """One undoable command writing `labels` except on human pixels. With `mark_auto` (a model
        proposal) an unlabeled image becomes `auto` even when the proposal is all background;
        otherwise the status is derived when saved (auto, or edited when a human painted)."""
        doc = self.session.document
        status = self.record_status(doc.key) if doc is not None else None
        auto = Status.AUTO if mark_auto and status in AUTO_STATUSES else None
        return self.session.apply_labels(labels, text=text, status=auto)

    def merge_into_saved(self, key: str, proposal: np.ndarray) -> None:
        """A proposal for image `key`: an undo step when it is open, else merged into its saved
        label map on the session's I/O thread (human pixels kept); `status_changed(key)` follows."""
        self.session.store_proposal(key, proposal)

    def annotation_saved_elsewhere(self, key: str) -> None:
        """The worker replaced the saved map of `key`: drop its undo history, refresh its status."""
        self.session.annotation_saved_elsewhere(key)

    def set_labelset(self, labelset: LabelSet) -> None:
        self.session.set_labelset(labelset)

    def go_to(self, key: str) -> None:
        self.session.go_to(key)

    def set_extra_overlay(self, rgba: np.ndarray | None) -> None:
        self.window.canvas.set_extra_overlay(rgba)

    def canvas_viewport(self) -> QWidget:
        """The widget that receives the canvas's pointer events (for an event filter that takes
        some clicks for itself, e.g. click-to-correct)."""
        return self.window.canvas.viewport()

    def image_point(self, pos) -> tuple[float, float]:
        """Image coordinates (x, y) of a position in the canvas viewport."""
        return self.window.canvas.image_point(pos)

    # --- chrome ------------------------------------------------------------------------------
    def add_menu(self, title: str, actions: list[QAction | None]) -> None:
        """Append `actions` (None: a separator) to menu `title`, registered in the window's action
        registry (shortcuts work with the menu closed; the Help table lists them)."""
        registry = self.window.registry
        menu = registry.menu(title)
        if title == "Model" and not self._placeholder_removed:
            menu.clear()  # the window's "No model loaded" placeholder
            self._placeholder_removed = True
        for act in actions:
            if act is None:
                menu.addSeparator()
            else:
                registry.add(act, title)

    def add_status_widget(self, widget: QWidget) -> None:
        self.window.statusBar().addPermanentWidget(widget)

    def insert_under_banner(self, widget: QWidget) -> None:
        """Place `widget` (e.g. a notice with buttons) right under the message banner."""
        layout = self.window.centralWidget().layout()
        layout.insertWidget(layout.indexOf(self.window.banner) + 1, widget)

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
        self.session.say(text, "warning")

    def show_error(self, title: str, text: str) -> None:
        """A non-modal message in the window (its banner); the app goes on."""
        self.session.say(f"{title}: {text}")

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
