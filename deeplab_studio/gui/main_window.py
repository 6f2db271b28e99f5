"""The main window: menus and shortcuts, canvas, image list and class docks, status bar, and the
work flow (open folder, switch image, autosave, review, export).

Extension points for the model-in-the-loop work: `model_menu`, `imageOpened`/`imageClosed`
signals, `apply_proposal()` (one undoable patch that never touches human-edited pixels), and
`set_extra_overlay()` / `canvas.set_confidence()` for an RGBA or confidence layer.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (QCheckBox, QDockWidget, QLabel, QMainWindow, QMessageBox, QSlider,
                               QSpinBox, QToolBar, QUndoView, QVBoxLayout, QWidget)

from deeplab_studio import __version__
from deeplab_studio.core.labels import LabelSet
from deeplab_studio.gui import qt_compat
from deeplab_studio.gui import settings as prefs
from deeplab_studio.gui.autosave import AutoSaver
from deeplab_studio.gui.canvas import CanvasView
from deeplab_studio.gui.class_panel import ClassPanel
from deeplab_studio.gui.document import AnnotationDocument
from deeplab_studio.gui.editing import EditingMixin
from deeplab_studio.gui.image_list import ImageListPanel
from deeplab_studio.gui.navigation import NavigationMixin
from deeplab_studio.gui.shortcuts import ACTIONS, MENUS
from deeplab_studio.gui.tools import ToolBox, ToolContext
from deeplab_studio.gui.undo import UndoManager
from deeplab_studio.gui.widgets import Banner, ShortcutsDialog, StatusFields
from deeplab_studio.storage.project import Project

qt_compat.apply()  # before any window exists: see qt_compat (PySide6 refcount bug on Python 3.11)

TOOL_ACTIONS = ("tool_brush", "tool_eraser", "tool_fill", "tool_polygon", "tool_picker")


class MainWindow(NavigationMixin, EditingMixin, QMainWindow):
    """The annotation window. Public API used by tests and the model-in-the-loop modules:
    `open_folder/open_project`, `open_image`, `go_to`, `step`, `apply_labels/apply_proposal`,
    `merge_proposal_into_saved`, `set_labelset`, `set_extra_overlay`, `show_message/show_error`."""

    imageOpened = Signal(int)  # record index; the document is `self.document`
    imageChanged = Signal(object)  # the record now shown (after its document loaded), or None
    imageClosed = Signal()
    folderOpened = Signal(str)
    projectChanged = Signal(object)  # the Project just opened
    messageShown = Signal(str)
    closing = Signal()  # before the window closes (workers cancel and join here)

    def __init__(self, settings: QSettings | None = None) -> None:
        super().__init__()
        self.settings = settings if settings is not None else prefs.default_settings()
        self.project: Project | None = None
        self._close_refused = False
        self.prefetcher = None  # ImagePrefetcher of the open project
        self.inference = None  # slot for the model-in-the-loop worker (a QObject in its own QThread)
        self.index = -1
        self.document: AnnotationDocument | None = None
        self.labelset = LabelSet.voc()
        self.setWindowTitle("DeepLab Studio[*]")
        self.setAcceptDrops(True)

        self.toolbox = ToolBox(ToolContext(document=lambda: self.document, commit=self._commit,
                                           pick=self._picked, preview_changed=self._polygon_preview))
        self.undo = UndoManager(lambda: self.document, self, changed=self._journal_change)
        self.autosave = AutoSaver(self)
        self.canvas = CanvasView(self.toolbox)
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
        self.docks = {}
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
        self._counts_timer = QTimer(self)
        self._counts_timer.setSingleShot(True)
        self._counts_timer.setInterval(250)
        self._counts_timer.timeout.connect(self._refresh_counts)

        self.action_map: dict[str, QAction] = {}
        self.menus = {}
        self._build_actions()
        self._build_toolbar()
        self._connect()
        self.class_panel.set_labelset(self.labelset)
        prefs.restore_window(self)
        self._update_title()

    # --- construction -----------------------------------------------------------------------
    def _build_actions(self) -> None:
        bar = self.menuBar()
        for title in MENUS:
            self.menus[title] = bar.addMenu(f"&{title}")
        self.model_menu = self.menus["Model"]  # the model-in-the-loop work adds its actions here
        self.model_menu.addAction("No model loaded").setEnabled(False)
        self.recent_menu = self.menus["File"].addMenu("Open &Recent")
        tools = QActionGroup(self)
        for spec in ACTIONS:
            act = QAction(spec.text, self)
            act.setObjectName(spec.id)
            act.setShortcuts([QKeySequence(k) for k in spec.keys])
            act.setCheckable(spec.checkable)
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            plain = spec.text.replace("&", "").rstrip("…")
            act.setToolTip(f"{plain} ({', '.join(spec.keys)})" if spec.keys else plain)
            self.action_map[spec.id] = act
            self.addAction(act)
            if spec.menu:
                if spec.id == "quit":
                    self.menus["File"].addSeparator()
                self.menus[spec.menu].addAction(act)
            if spec.id in TOOL_ACTIONS:
                tools.addAction(act)
        a = self.action_map
        a["toggle_overlay"].setChecked(True)
        handlers = {
            "open_folder": self.choose_folder, "export_voc": self.export_voc, "quit": self.close,
            "undo": lambda: self.undo_redo(False), "redo": lambda: self.undo_redo(True),
            "fit": self.canvas.fit, "actual_size": self.canvas.actual_size,
            "zoom_in": lambda: self.canvas.zoom_by(1.25), "zoom_out": lambda: self.canvas.zoom_by(0.8),
            "brush_smaller": lambda: self.set_brush_size(self._brush_step(-1)),
            "brush_bigger": lambda: self.set_brush_size(self._brush_step(+1)),
            "opacity_down": lambda: self.set_opacity(self.canvas.overlay.opacity() - 0.1),
            "opacity_up": lambda: self.set_opacity(self.canvas.overlay.opacity() + 0.1),
            "prev_image": lambda: self.step(-1), "next_image": lambda: self.step(+1),
            "next_unreviewed": self.next_unreviewed, "mark_reviewed": self.mark_reviewed_and_next,
            "shortcuts": self.show_shortcuts, "about": self.show_about,
        }
        for key, fn in handlers.items():
            a[key].triggered.connect(fn)
        a["history"].toggled.connect(self.docks["history"].setVisible)
        self.docks["history"].visibilityChanged.connect(
            lambda shown: a["history"].setChecked(shown) if not self.isMinimized() else None)
        a["toggle_overlay"].toggled.connect(self.set_overlay_visible)
        a["toggle_edit_outline"].toggled.connect(self.canvas.set_edit_outline_visible)
        a["background_only"].toggled.connect(self.set_background_only)
        for name in TOOL_ACTIONS:
            a[name].triggered.connect(lambda _=False, n=name[5:]: self.set_tool(n))
        for k in range(10):
            a[f"class_{k}"].triggered.connect(lambda _=False, k=k: self.set_active_class(k))
        self.menus["View"].addSeparator()
        for dock in self.docks.values():
            if dock is not self.docks["history"]:
                self.menus["View"].addAction(dock.toggleViewAction())

    def _build_toolbar(self) -> None:
        tb = QToolBar("Tools", self)
        tb.setObjectName("toolbar_tools")
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for name in TOOL_ACTIONS:
            tb.addAction(self.action_map[name])
            tb.widgetForAction(self.action_map[name]).setText(name[5:].capitalize())
        tb.addSeparator()
        tb.addWidget(QLabel(" Size "))
        self.size_slider = QSlider(Qt.Orientation.Horizontal)
        self.size_slider.setRange(1, 500)
        self.size_slider.setFixedWidth(140)
        self.size_spin = QSpinBox()
        self.size_spin.setRange(1, 500)
        self.size_spin.setSuffix(" px")
        tb.addWidget(self.size_slider)
        tb.addWidget(self.size_spin)
        self.bg_only = QCheckBox("Background only")
        self.bg_only.setToolTip("Paint over background pixels only (G)")
        tb.addWidget(self.bg_only)
        tb.addSeparator()
        tb.addWidget(QLabel(" Opacity "))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setFixedWidth(110)
        tb.addWidget(self.opacity_slider)
        self.addToolBar(tb)
        self.size_slider.valueChanged.connect(self.set_brush_size)
        self.size_spin.valueChanged.connect(self.set_brush_size)
        self.opacity_slider.valueChanged.connect(lambda v: self.set_opacity(v / 100.0))
        self.bg_only.toggled.connect(self.set_background_only)
        self.set_brush_size(int(self.settings.value("brush_size", 20)))
        self.set_opacity(float(self.settings.value("opacity", 0.5)))
        self.set_tool(str(self.settings.value("tool", "brush")))

    def _connect(self) -> None:
        self.canvas.cursorMoved.connect(self._cursor_moved)
        self.canvas.cursorLeft.connect(self._cursor_left)
        self.canvas.zoomChanged.connect(self.status.set_zoom)
        self.image_panel.imageActivated.connect(self.open_image)
        self.class_panel.activeChanged.connect(self.set_active_class)
        self.class_panel.hiddenChanged.connect(self._hidden_changed)
        self.class_panel.addRequested.connect(self.add_class)
        self.class_panel.renameRequested.connect(self.rename_class)
        self.class_panel.recolorRequested.connect(self.recolor_class)
        self.class_panel.deleteRequested.connect(self.delete_class)
        self.undo.group.cleanChanged.connect(lambda _clean: self._update_title())
        self.undo.group.indexChanged.connect(self._stack_changed)
        self.autosave.saved.connect(self._saved)
        self.autosave.failed.connect(self._save_failed)
        self._rebuild_recent_menu()

    def undo_redo(self, redo: bool) -> None:
        """Undo or redo one step; a stroke or polygon in progress is finished first."""
        self.toolbox.active.cancel()
        (self.undo.group.redo if redo else self.undo.group.undo)()

    # --- messages ---------------------------------------------------------------------------
    def show_message(self, text: str, level: str = "error") -> None:
        """Show `text` in the banner (non-modal) and the status bar; the app goes on."""
        self.banner.show_message(text, level)
        self.statusBar().showMessage(self.status.elided(text.splitlines()[0] if text else ""), 10000)
        self.messageShown.emit(text)

    def show_error(self, title: str, text: str) -> None:
        self.show_message(f"{title}: {text}")

    # --- dialogs ----------------------------------------------------------------------------
    def export_voc(self) -> None:
        if self.project is None:
            self.show_message("Open a folder before exporting.", "info")
            return
        self.autosave.flush()
        from deeplab_studio.gui.export_dialog import ExportDialog

        dlg = ExportDialog(self.project, self.settings, self)
        dlg.show()
        self._export_dialog = dlg

    def extra_shortcut_rows(self) -> list[tuple[str, str, str]]:
        """Actions with shortcuts that other modules (e.g. the model tools) added to the window."""
        own = {spec.id for spec in ACTIONS}
        rows = []
        for act in self.actions_added_elsewhere():
            if act.objectName() in own or not act.shortcuts():
                continue
            where = next((t for t, m in self.menus.items() if act in m.actions()), "Window")
            keys = ", ".join(k.toString(QKeySequence.SequenceFormat.PortableText) for k in act.shortcuts())
            rows.append((where, act.text().replace("&", "").rstrip("…"), keys))
        return rows

    def actions_added_elsewhere(self) -> list[QAction]:
        mine = set(self.action_map.values())
        return [a for a in QMainWindow.actions(self) if a not in mine]

    def show_shortcuts(self) -> ShortcutsDialog:
        dlg = ShortcutsDialog(self, self.extra_shortcut_rows())
        dlg.show()
        self._shortcuts_dialog = dlg
        return dlg

    def show_about(self) -> None:
        QMessageBox.about(self, "About DeepLab Studio",
                          f"DeepLab Studio {__version__}\nAnnotation assistant for semantic segmentation.")

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = prefs.recent_folders(self.settings)
        for folder in recent:
            self.recent_menu.addAction(folder, lambda f=folder: self.open_folder(f))
        self.recent_menu.setEnabled(bool(recent))

    # --- drag and drop, close ---------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if _dropped_folder(event.mimeData()) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        folder = _dropped_folder(event.mimeData())
        if folder is not None:
            event.acceptProposedAction()
            self.open_folder(folder)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.close_image() and not self._close_refused:
            # never drop work silently: the first close is refused with the reason shown;
            # closing again quits, keeping the last successful save on disk
            self._close_refused = True
            self.show_message(f"{self.banner.label.text()} — not closed. Free space or fix the folder, "
                              "or close again to quit without this change.")
            event.ignore()
            return
        self.closing.emit()
        self.autosave.shutdown()
        if self.prefetcher is not None:
            self.prefetcher.shutdown()
        if self.project is not None:
            self.project.close()  # releases the write lock
        prefs.save_window(self)
        super().closeEvent(event)

    def open_in_file_manager(self, folder: str) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(folder))


def _dropped_folder(mime) -> str | None:
    for url in mime.urls() if mime.hasUrls() else []:
        if url.isLocalFile() and Path(url.toLocalFile()).is_dir():
            return url.toLocalFile()
    return None
