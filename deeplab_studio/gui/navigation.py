"""Folder and image navigation for the main window (mixin): open a folder, switch images with
save-first semantics, previous/next, next not reviewed, mark reviewed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QFileDialog

from deeplab_studio.gui import settings as prefs
from deeplab_studio.gui.canvas import EMPTY_HINT
from deeplab_studio.gui.document import AnnotationDocument
from deeplab_studio.gui.prefetch import ImagePrefetcher
from deeplab_studio.storage.images import IMAGE_EXTENSIONS, ImageReadError
from deeplab_studio.storage.project import Project, ProjectError, ProjectLockedError, Status
from deeplab_studio.storage.project_lock import describe_holder


def open_project(folder) -> tuple[Project, str]:
    """The project of `folder` for writing, or read-only when another writer has it (then the
    second value says why)."""
    try:
        return Project.open(folder), ""
    except ProjectLockedError:
        project = Project.open(folder, read_only=True)
        return project, f"{describe_holder(project.data_dir)} has this project open for writing."


def record_status(rec) -> str:
    s = rec.status
    return getattr(s, "value", str(s))


class NavigationMixin:
    """Needs the MainWindow attributes: project, index, document, labelset, panels, undo, autosave."""

    # --- folders ----------------------------------------------------------------------------
    def choose_folder(self) -> None:
        start = self.project.folder if self.project else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images", str(start))
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: str | Path) -> bool:
        """Open (or create) the project of `folder` and show its first image.

        Refused (False) while the open image has changes that cannot be saved."""
        if not self.close_image():
            self.show_message(f"{self.banner.label.text()} — fix that before opening another folder.")
            return False
        old = self.project
        same = old is not None and Path(folder).expanduser().resolve() == Path(old.folder)
        if same:
            old.close()  # release its lock so it can be opened again
        try:
            project, locked = open_project(folder)
        except (ProjectError, OSError, ValueError) as exc:
            if same:
                self.project, _ = open_project(old.folder)
            reason = str(exc)  # storage errors usually name the folder already
            message = f"Cannot open folder: {reason}" if str(folder) in reason else f"Cannot open {folder}: {reason}"
            if self.project is not None and self.index >= 0:
                self.open_image(self.index)  # back to the image that was open (saved above)
            self.show_message(message)
            return False
        if old is not None and not same:
            old.close()
        self.project = project
        self.toolbox.ctx.read_only = project.read_only
        self.index = -1  # an index into the previous folder's records means nothing here
        if self.prefetcher is not None:
            self.prefetcher.shutdown()
        self.prefetcher = ImagePrefetcher(project)
        self.labelset = project.labels
        self.class_panel.set_labelset(self.labelset)
        self.image_panel.set_images([r.path for r in project.records], [record_status(r) for r in project.records])
        prefs.add_recent(self.settings, str(project.folder))
        self._rebuild_recent_menu()
        self.banner.dismiss()
        notes = [getattr(p, "message", None) or str(p) for p in getattr(project, "problems", [])]
        if Path(project.data_dir).resolve().parent != Path(project.folder).resolve():
            notes.insert(0, f"The folder is not writable; annotations are kept in {project.data_dir}")
        notes += project.notes
        if locked:
            notes.insert(0, f"Read-only: {locked} Changes made in this window are not saved.")
        if notes:
            self.show_message("; ".join(notes[:3]) + (f" (+{len(notes) - 3} more)" if len(notes) > 3 else ""), "warning")
        self.folderOpened.emit(str(project.folder))
        self.projectChanged.emit(project)
        if project.records:
            last = prefs.last_image(self.settings, str(project.folder))
            names = [r.path for r in project.records]
            self.open_image(names.index(last) if last in names else 0)
        else:
            self.show_message(f"No images found in {project.folder}", "info")
            self.canvas.set_placeholder(f"No images in {project.folder}\n\nImages are read from the folder and its "
                                        f"subfolders ({' '.join(IMAGE_EXTENSIONS)}).\n"
                                        "Open another folder with Ctrl+O or drop one here.")
        self._update_title()
        return True

    # --- images -----------------------------------------------------------------------------
    @property
    def record(self):
        if self.project is None or not 0 <= self.index < len(self.project.records):
            return None
        return self.project.records[self.index]

    def close_image(self) -> bool:
        """Save and close the open image. False (and the image stays) when saving failed."""
        self.toolbox.active.cancel()
        if self.document is not None and not self.autosave.flush():
            return False
        self.autosave.detach()
        self.undo.deactivate()
        self.canvas.set_document(None)
        self.document = None
        self.status.clear_image()  # nothing shown: no size, class, zoom or save state of the old image
        self.class_panel.set_counts(np.zeros(256, np.int64))
        self.imageClosed.emit()
        return True

    def open_image(self, index: int) -> bool:
        """Show image `index` of the project (the current one is saved first)."""
        if self.project is None or not 0 <= index < len(self.project.records):
            return False
        if index == self.index and self.document is not None:
            return True
        if not self.close_image():
            return False
        rec = self.project.records[index]
        self.index = index
        self.image_panel.set_current(index)
        prefs.set_last_image(self.settings, str(self.project.folder), rec.path)
        try:
            image = self.prefetcher.get(rec)
            labels, edit_mask = self.project.load_annotation(rec)
            doc = AnnotationDocument(image, labels, edit_mask, self.labelset, key=rec.path)
            doc.record = rec
        except (ImageReadError, ProjectError, OSError, ValueError) as exc:
            self.status.set_size(None, None)
            self.show_message(f"Cannot open {rec.path}: {exc}")
            self.canvas.set_placeholder(f"Cannot open {rec.path}\n\nGo to another image with A / D or the image list.")
            self._update_title()
            self.imageChanged.emit(None)
            return False
        if self.banner.level == "error":
            self.banner.dismiss()
        self.document = doc
        self.canvas.set_placeholder(EMPTY_HINT)
        doc.changed.connect(self._doc_changed)
        doc.reset.connect(self._doc_changed)
        stack = self.undo.stack_for(rec.path)
        self.autosave.attach(self.project, rec, doc, stack)
        self.canvas.set_document(doc)
        self.canvas.overlay.set_colors(self.labelset.palette(), self.class_panel.hidden)
        self.status.set_size(doc.width, doc.height)
        self._refresh_counts()
        self._update_title()
        self.imageOpened.emit(index)
        self.imageChanged.emit(rec)
        self._prefetch_neighbours()
        return True

    def step(self, delta: int) -> bool:
        """Previous/next image among those the list shows (O(log n): no walk over the list)."""
        panel = self.image_panel
        if not panel.shown_count():
            return False
        target = panel.neighbour(self.index, delta)
        if target is None:
            self.statusBar().showMessage("No more images in that direction", 3000)
            return False
        return self.open_image(target)

    def next_unreviewed(self) -> bool:
        if self.project is None:
            return False
        n = len(self.project.records)
        for k in range(1, n + 1):
            i = (self.index + k) % n
            if record_status(self.project.records[i]) != "reviewed":
                return self.open_image(i)
        self.show_message("Every image is reviewed.", "info")
        return False

    def mark_reviewed_and_next(self) -> bool:
        rec = self.record
        if rec is None or self.document is None:
            return False
        if not self.autosave.flush():
            return False
        try:
            if not self.project.has_annotation(rec):
                self.project.save_annotation(rec, self.document.labels, self.document.edit_mask)
            self.project.set_status(rec, Status.REVIEWED)
        except (ProjectError, OSError, ValueError) as exc:
            self.show_message(f"Cannot mark {rec.path} reviewed: {exc}")
            return False
        self.image_panel.set_status(self.index, record_status(rec))
        return self.next_unreviewed() if any(record_status(r) != "reviewed" for r in self.project.records) else True

    def _prefetch_neighbours(self) -> None:
        """Decode the next and previous images (in list order) in the background."""
        panel = self.image_panel
        if not panel.is_shown(self.index):
            return
        recs = self.project.records
        near = [panel.neighbour(self.index, d) for d in (+1, -1)]
        self.prefetcher.prefetch([recs[i] for i in near if i is not None])

    # --- API for the model-in-the-loop modules ------------------------------------------------
    def open_project(self, folder) -> bool:
        return self.open_folder(folder)

    @property
    def current_record(self):
        return self.record if self.document is not None else None

    def go_to(self, target) -> bool:
        """Open the image given by its record or its key (relative path)."""
        if self.project is None:
            return False
        key = getattr(target, "path", target)
        for i, rec in enumerate(self.project.records):
            if rec.path == key:
                return self.open_image(i)
        return False
