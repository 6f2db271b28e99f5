"""The main window: a thin Qt view of an `AnnotationSession`.

The session (`deeplab_studio.session`) owns the project, the current image, its document, the
label set and the tools; this window lays out the canvas, the image list, the class panel and the
history, turns its actions into session calls, and follows the session's events. The model and
training tools attach from outside through `WindowLink` (napari style).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QActionGroup, QCloseEvent
from PySide6.QtWidgets import QDockWidget, QFileDialog, QMainWindow, QMessageBox, QUndoView, QVBoxLayout, QWidget

from deeplab_studio import __version__
from deeplab_studio.gui import qt_compat
from deeplab_studio.gui.window import settings as prefs
from deeplab_studio.gui.window.actions import ActionRegistry
from deeplab_studio.gui.window.autosave import AutoSaver
from deeplab_studio.gui.canvas.view import EMPTY_HINT, CanvasView
from deeplab_studio.gui.panels.class_panel import ClassPanel
from deeplab_studio.gui.panels.image_list import ImageListPanel
from deeplab_studio.gui.window.shortcuts import ACTIONS
from deeplab_studio.gui.window.tool_controls import TOOL_ACTIONS, ToolControls
from deeplab_studio.gui.window.undo import UndoManager
from deeplab_studio.gui.window.widgets import Banner, ShortcutsDialog, StatusFields
from deeplab_studio.session.annotation_session import AnnotationSession

qt_compat.apply()  # before any window exists: see qt_compat (PySide6 refcount bug on Python 3.11)


class _Poster(QObject):
    """Runs callables on the GUI thread (the session's background completions)."""

    posted = Signal(object)

    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self.posted.connect(lambda fn: fn())


class MainWindow(QMainWindow):
    """Qt signals for the model-in-the-loop modules (through `WindowLink`): `imageChanged(record or
    None)`, `projectChanged(project)`, `messageShown(text)` and `closing()`."""

    imageChanged = Signal(object)  # the record now shown (after its document loaded), or None
    projectChanged = Signal(object)  # the Project just opened (after its notes were shown)
    messageShown = Signal(str)
    closing = Signal()  # before the window closes (workers cancel and join here)

    def __init__(self, settings: QSettings | None = None) -> None:
        super().__init__()
        self.settings = settings if settings is not None else prefs.default_settings()
        self._close_refused = False
        self.setWindowTitle("DeepLab Studio[*]")
        self.setAcceptDrops(True)
        poster = _Poster(self)
        self.undo = UndoManager(lambda: self.session.document, self, changed=lambda *p: self.session.journal_change(*p))
        self.autosave = AutoSaver(self)
        self.session = AnnotationSession(history=self.undo, saver=self.autosave, call_soon=poster.posted.emit)
        self.canvas = CanvasView(self.session.tools)
        self.banner = Banner()
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.banner)
        lay.addWidget(self.canvas, 1)
        self.setCentralWidget(central)

        self.image_panel = ImageListPanel()
        self.class_panel = ClassPanel()
        self.history = QUndoView(self.undo.group)
        self.history.setEmptyLabel("<opened>")
        self.docks: dict[str, QDockWidget] = {}
        for key, title, widget, area in (("images", "Images", self.image_panel, Qt.DockWidgetArea.LeftDockWidgetArea),
                                         ("classes", "Classes", self.class_panel, Qt.DockWidgetArea.RightDockWidgetArea),
                                         ("history", "History", self.history, Qt.DockWidgetArea.RightDockWidgetArea)):
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock_{key}")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[key] = dock
        self.docks["history"].hide()
        self.status = StatusFields(self.statusBar())
        self._cursor_xy: tuple[float, float] | None = None
        self._counts_timer = QTimer(self)
        self._counts_timer.setSingleShot(True)
        self._counts_timer.setInterval(250)
        self._counts_timer.timeout.connect(self._refresh_counts)

        self.registry = ActionRegistry(self)
        self._build_actions()
        self.tool_controls = ToolControls(self.session.tools, self.canvas, self.registry, self.settings, self)
        self.addToolBar(self.tool_controls.toolbar)
        self._connect()
        self.class_panel.set_labelset(self.session.labelset)
        prefs.restore_window(self, self.settings, [self.docks["images"], self.docks["classes"]],
                             self.tool_controls.set_overlay_visible)
        self._update_title()

    # --- read-only views of the session's state (for the model tools and tests) -----------------
    project = property(lambda self: self.session.project)
    document = property(lambda self: self.session.document)
    index = property(lambda self: self.session.index)
    labelset = property(lambda self: self.session.labelset)
    toolbox = property(lambda self: self.session.tools)

    # --- construction ---------------------------------------------------------------------------
    def _build_actions(self) -> None:
        reg = self.registry
        self.model_menu = reg.menus["Model"]  # the model tools replace this placeholder
        self.model_menu.addAction("No model loaded").setEnabled(False)
        self.recent_menu = reg.menus["File"].addMenu("Open &Recent")
        tools = QActionGroup(self)
        for spec in ACTIONS:
            if spec.id == "quit":
                reg.menus["File"].addSeparator()
            act = reg.build(spec)
            if spec.id in TOOL_ACTIONS:
                tools.addAction(act)
        s = self.session
        handlers = {
            "open_folder": self.choose_folder, "import_dataset": self.import_dataset, "export_voc": self.export_voc,
            "quit": self.close,
            "undo": s.undo, "redo": s.redo,
            "fit": self.canvas.fit, "actual_size": self.canvas.actual_size,
            "zoom_in": lambda: self.canvas.zoom_by(1.25), "zoom_out": lambda: self.canvas.zoom_by(0.8),
            "prev_image": lambda: self.step(-1), "next_image": lambda: self.step(+1),
            "next_unreviewed": s.next_unreviewed, "mark_reviewed": s.mark_reviewed_and_next,
            "shortcuts": self.show_shortcuts, "about": self.show_about,
        }
        for key, fn in handlers.items():
            reg[key].triggered.connect(fn)
        reg["history"].toggled.connect(self.docks["history"].setVisible)
        self.docks["history"].visibilityChanged.connect(
            lambda shown: reg["history"].setChecked(shown) if not self.isMinimized() else None)
        for k in range(10):
            reg[f"class_{k}"].triggered.connect(lambda _=False, k=k: s.set_active_class(k))
        reg.menus["View"].addSeparator()
        for key in ("images", "classes"):
            reg.menus["View"].addAction(self.docks[key].toggleViewAction())

    def _connect(self) -> None:
        s = self.session
        s.project_changed.connect(self._project_changed)
        s.project_opened.connect(self.projectChanged.emit)
        s.image_selected.connect(self._image_selected)
        s.image_changed.connect(self._image_changed)
        s.image_closed.connect(self._image_closed)
        s.status_changed.connect(self._status_changed)
        s.labels_changed.connect(self._labels_changed)
        s.active_class_changed.connect(lambda v: self.class_panel.select(v, emit=False)
                                       if self.class_panel.active != v else None)
        s.preview_changed.connect(self.canvas.update_polygon_preview)
        s.message.connect(self.show_message)
        self.session.order = self.image_panel.neighbour  # the order the list shows
        self.canvas.cursorMoved.connect(self._cursor_moved)
        self.canvas.cursorLeft.connect(self._cursor_left)
        self.canvas.zoomChanged.connect(self.status.set_zoom)
        self.image_panel.imageActivated.connect(s.open_image)
        self.class_panel.activeChanged.connect(s.set_active_class)
        self.class_panel.hiddenChanged.connect(lambda hidden: self._recolor())
        self.class_panel.addRequested.connect(s.add_class)
        self.class_panel.renameRequested.connect(s.rename_class)
        self.class_panel.recolorRequested.connect(s.recolor_class)
        self.class_panel.deleteRequested.connect(s.delete_class)
        self.undo.group.cleanChanged.connect(lambda _clean: self._update_title())
        self.undo.group.indexChanged.connect(self._stack_changed)
        self.autosave.failed.connect(lambda _text: self.status.set_save_state("Not saved!", ok=False))
        self._rebuild_recent_menu()

    # --- user intentions the window adds to the session's ----------------------------------------
    def choose_folder(self) -> None:
        start = self.project.folder if self.project else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images", str(start))
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: str | Path) -> bool:
        """Open the project of `folder` at the image last shown there."""
        key = prefs.last_image(self.settings, str(Path(folder).expanduser().resolve()))
        return self.session.open_folder(folder, prefer_key=key)

    def open_image(self, index: int) -> bool:
        return self.session.open_image(index)

    def go_to(self, target) -> bool:
        return self.session.go_to(target)

    def step(self, delta: int) -> bool:
        """Previous/next image among those the list shows (O(log n): no walk over the list)."""
        return self.image_panel.shown_count() > 0 and self.session.step(delta)

    def apply_labels(self, new_labels: np.ndarray, *, text: str = "Auto-segment", status=None) -> bool:
        return self.session.apply_labels(new_labels, text=text, status=status)

    def set_labelset(self, labelset) -> bool:
        return self.session.set_labelset(labelset)

    def set_active_class(self, value: int) -> bool:
        return self.session.set_active_class(value)

    def set_brush_size(self, size: int) -> None:
        self.tool_controls.set_brush_size(size)

    def mark_reviewed_and_next(self) -> bool:
        return self.session.mark_reviewed_and_next()

    # --- following the session --------------------------------------------------------------------
    def _project_changed(self, project) -> None:
        self.image_panel.set_images([r.path for r in project.records], [r.status.value for r in project.records])
        prefs.add_recent(self.settings, str(project.folder))
        self._rebuild_recent_menu()
        self.banner.dismiss()
        self._update_title()

    def _image_selected(self, index: int) -> None:
        self.image_panel.set_current(index)
        prefs.set_last_image(self.settings, str(self.project.folder), self.project.records[index].path)

    def _image_changed(self, rec) -> None:
        doc = self.document
        if rec is None:
            self.status.set_size(None, None)
            self.canvas.set_placeholder(self.session.empty_reason)
        else:
            if self.banner.level == "error":
                self.banner.dismiss()
            self.canvas.set_placeholder(EMPTY_HINT)
            doc.changed.connect(self._doc_changed)
            doc.reset.connect(self._doc_changed)
            self.canvas.set_document(doc)
            self._recolor()
            self.status.set_size(doc.width, doc.height)
            self._refresh_counts()
        self._update_title()
        self.imageChanged.emit(rec)

    def _image_closed(self) -> None:
        self.canvas.set_document(None)
        self.status.clear_image()  # nothing shown: no size, class, zoom or save state of the old image
        self.class_panel.set_counts(np.zeros(256, np.int64))

    def _status_changed(self, key: str) -> None:
        index = self.session.find(key)
        if index is not None:
            self.image_panel.set_status(index, self.project.records[index].status.value)
        self._update_title()

    def _labels_changed(self, labelset) -> None:
        self.class_panel.set_labelset(labelset)
        if self.document is not None:
            self._recolor()
            self._refresh_counts()

    def _recolor(self) -> None:
        self.canvas.overlay.set_colors(self.labelset.palette(), self.class_panel.hidden)

    def _doc_changed(self, *_args) -> None:
        self._counts_timer.start()

    def _stack_changed(self, _index: int) -> None:
        self.autosave.schedule()
        self._update_title()

    def _refresh_counts(self) -> None:
        if self.document is not None:
            self.class_panel.set_counts(self.document.class_counts())
            if self._cursor_xy is not None:  # the class under a still cursor may have changed
                self._cursor_moved(*self._cursor_xy)

    def _update_title(self) -> None:
        dirty = self.autosave.dirty()
        rec, parts = self.session.record, ["DeepLab Studio"]
        if self.project is not None:
            parts.insert(0, Path(self.project.folder).name + (" (read-only)" if self.project.read_only else ""))
        if rec is not None:
            parts.insert(0, rec.path + "[*]")
        else:
            parts[-1] += "[*]"
        self.setWindowTitle(" — ".join(parts))
        self.setWindowModified(dirty)
        if self.document is None:
            self.status.set_save_state("")
        else:
            self.status.set_save_state("Unsaved changes…" if dirty else "All changes saved")

    def _cursor_left(self) -> None:
        self._cursor_xy = None
        self.status.set_cursor(None, None)

    def _cursor_moved(self, x: float, y: float) -> None:
        self._cursor_xy = (x, y)
        doc = self.document
        if doc is None or not doc.contains(x, y):
            self.status.set_cursor(None, None)
            return
        v = doc.label_at(x, y)
        mark = " ✎" if doc.edit_mask[int(y), int(x)] else ""
        self.status.set_cursor(int(x), int(y), f"{v} {self.session.class_name(v)}{mark}")

    # --- messages -------------------------------------------------------------------------------
    def show_message(self, text: str, level: str = "error") -> None:
        """Show `text` in the banner (non-modal) and the status bar; "status" only in the bar."""
        if level == "status":
            self.statusBar().showMessage(text, 3000)
            return
        self.banner.show_message(text, level)
        self.statusBar().showMessage(self.status.elided(text.splitlines()[0] if text else ""), 10000)
        self.messageShown.emit(text)

    def show_error(self, title: str, text: str) -> None:
        self.session.say(f"{title}: {text}")

    # --- dialogs --------------------------------------------------------------------------------
    def export_voc(self):
        """Open the export dialog (the open image is saved first); returns it, or None."""
        if self.project is None:
            self.session.say("Open a folder before exporting.", "info")
            return None
        self.autosave.flush()
        from deeplab_studio.gui.export.dialog import ExportDialog

        self._export_dialog = ExportDialog(self.project, self.settings, self)
        self.closing.connect(self._export_dialog.shutdown)  # a running export stops and is joined
        self._export_dialog.show()
        return self._export_dialog

    def import_dataset(self):
        """Open the import dialog (into the open project, or a folder to create); returns it."""
        from deeplab_studio.gui.export.import_dialog import ImportDialog

        self._import_dialog = ImportDialog(self.session, self.settings, self)
        self.closing.connect(self._import_dialog.shutdown)
        self._import_dialog.show()
        return self._import_dialog

    def show_shortcuts(self) -> ShortcutsDialog:
        self._shortcuts_dialog = ShortcutsDialog(self.registry.rows(), self)
        self._shortcuts_dialog.show()
        return self._shortcuts_dialog

    def show_about(self) -> None:
        QMessageBox.about(self, "About DeepLab Studio",
                          f"DeepLab Studio {__version__}\nAnnotation assistant for semantic segmentation.")

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = prefs.recent_folders(self.settings)
        for folder in recent:
            self.recent_menu.addAction(folder, lambda f=folder: self.open_folder(f))
        self.recent_menu.setEnabled(bool(recent))

    # --- drag and drop, close -------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if _dropped_folder(event.mimeData()) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        folder = _dropped_folder(event.mimeData())
        if folder is not None:
            event.acceptProposedAction()
            self.open_folder(folder)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.session.close_image() and not self._close_refused:
            # never drop work silently: the first close is refused with the reason shown;
            # closing again quits, keeping the last successful save on disk
            self._close_refused = True
            self.session.say(f"{self.session.last_message} — not closed. Free space or fix the folder, "
                             "or close again to quit without this change.")
            event.ignore()
            return
        self.closing.emit()
        self.session.shutdown()  # joins the saver and I/O threads, releases the write lock
        prefs.save_window(self, self.settings, self.canvas.overlay.isVisible())
        super().closeEvent(event)


def _dropped_folder(mime) -> str | None:
    for url in mime.urls() if mime.hasUrls() else []:
        if url.isLocalFile() and Path(url.toLocalFile()).is_dir():
            return url.toLocalFile()
    return None
