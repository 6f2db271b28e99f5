"""`AnnotationSession`: the one owner of the app's state, with no Qt.

It holds the open project, the current image and its document, the label set, the tools and the
background I/O, and it has a method for every user intention (open a folder, open or step to an
image, mark it reviewed, apply a model proposal, change the classes, undo). Views subscribe to its
events; the window is a thin layer that calls these methods. Merges of proposals into images
that are not open run on `io_queue.MergeQueue`; the merge rule itself is `core.merge`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from deeplab_studio.core.labels import IGNORE, LabelSet
from deeplab_studio.core.patches import MaskPatch, union_bbox
from deeplab_studio.session import class_edits
from deeplab_studio.session.document import AnnotationDocument
from deeplab_studio.session.events import Event
from deeplab_studio.session.history import DirectSaver, History, PatchHistory, Saver
from deeplab_studio.session.io_queue import MergeQueue
from deeplab_studio.session.opening import open_project, opening_notes
from deeplab_studio.session.prefetch import ImagePrefetcher
from deeplab_studio.session.snap import Refiner, StrokeSnapper
from deeplab_studio.session.superpixels import SuperpixelCache
from deeplab_studio.session.tools import ToolBox, ToolContext
from deeplab_studio.storage.images import IMAGE_EXTENSIONS, ImageReadError
from deeplab_studio.storage.project import Project, ProjectError, Status

#: (index, delta) -> the neighbouring index in the order the user sees, or None at the end
Order = Callable[[int, int], "int | None"]
LOAD_ERRORS = (ImageReadError, ProjectError, OSError, ValueError)


class AnnotationSession:
    """Events (each an `Event`; arguments in brackets):

    - `project_changed(project)`: a folder was opened (views refresh lists and class tables);
      `project_opened(project)` follows once its notes were said (model tools listen here)
    - `image_selected(index)`: the image about to open; `image_changed(record | None)`: it opened
      (None: it could not, `empty_reason` says why); `image_closed()`
    - `status_changed(key)`: an image's saved status may have changed
    - `labels_changed(labelset)`: the class list changed (and maybe the document's labels)
    - `active_class_changed(value)`, `preview_changed()` (a polygon in progress moved)
    - `message(text, level)`: level "error", "warning", "info" or "status" (a passing note)
    """

    def __init__(self, *, history: History | None = None, saver: Saver | None = None,
                 call_soon: Callable[[Callable[[], None]], None] | None = None) -> None:
        """`call_soon(fn)` runs `fn` on the session's thread (the window posts it to the Qt event
        loop); by default background completions run in the I/O thread itself."""
        self.project: Project | None = None
        self.index = -1
        self.document: AnnotationDocument | None = None
        self.labelset = LabelSet.voc()
        self.empty_reason = ""
        self.order: Order = lambda i, d: i + d if self.project and 0 <= i + d < len(self.project.records) else None
        self.history: History = history if history is not None else PatchHistory(lambda: self.document,
                                                                                  changed=self.journal_change)
        self.saver: Saver = saver if saver is not None else DirectSaver()
        self.superpixels = SuperpixelCache()  # the wand's, started when an image opens
        self.tools = ToolBox(ToolContext(document=lambda: self.document, commit=self.commit, pick=self._picked,
                                         preview_changed=lambda: self.preview_changed.emit(),
                                         superpixels=lambda: self.document and self.superpixels.get(self.document.key),
                                         message=lambda text: self.say(text, "status")))
        self.prefetcher: ImagePrefetcher | None = None
        self._merges = MergeQueue(call_soon or (lambda fn: fn()))
        self.project_changed, self.project_opened = Event(), Event()
        self.image_selected, self.image_changed, self.image_closed = Event(), Event(), Event()
        self.status_changed, self.labels_changed = Event(), Event()
        self.active_class_changed, self.preview_changed, self.message = Event(), Event(), Event()
        self.saver.saved.connect(lambda rec: self.status_changed.emit(rec.path))
        self.saver.failed.connect(lambda text: self.say(text))
        self.last_message = ""
        self._positions: tuple[list, int, dict[str, int]] | None = None  # find()'s index of the records

    # --- state ---------------------------------------------------------------------------------
    @property
    def records(self) -> list:
        return list(self.project.records) if self.project is not None else []

    @property
    def record(self):
        """The record at the current index (even when its image could not be opened)."""
        if self.project is None or not 0 <= self.index < len(self.project.records):
            return None
        return self.project.records[self.index]

    @property
    def current_record(self):
        """The record whose document is open, or None."""
        return self.record if self.document is not None else None

    @property
    def read_only(self) -> bool:
        return self.project is not None and self.project.read_only

    def find(self, key: str) -> int | None:
        """The index of the image with key (relative path) `key`, or None (a dict lookup, rebuilt
        only when the project's record list changed: every status change asks)."""
        recs = self.project.records if self.project is not None else []
        cached = self._positions
        if cached is None or cached[0] is not recs or cached[1] != len(recs):
            cached = self._positions = (recs, len(recs), {r.path: i for i, r in enumerate(recs)})
        return cached[2].get(key)

    def say(self, text: str, level: str = "error") -> None:
        if level != "status":
            self.last_message = text
        self.message.emit(text, level)

    # --- folders -------------------------------------------------------------------------------
    def open_folder(self, folder: str | Path, *, prefer_key: str | None = None) -> bool:
        """Open (or create) the project of `folder` and its image `prefer_key` (else the first).

        Refused (False) while the open image has changes that cannot be saved."""
        if not self.close_image():
            self.say(f"{self.last_message} — fix that before opening another folder.")
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
            self.say(message)
            return False
        if old is not None and not same:
            old.close()
        self._merges.wait()
        self.project = project
        self.tools.ctx.read_only = project.read_only
        self.index = -1  # an index into the previous folder's records means nothing here
        if self.prefetcher is not None:
            self.prefetcher.shutdown()
        self.prefetcher = ImagePrefetcher(project)
        self.labelset = project.labels
        self.project_changed.emit(project)
        self.labels_changed.emit(self.labelset)
        notes = opening_notes(project, locked)
        if notes:
            more = f" (+{len(notes) - 3} more)" if len(notes) > 3 else ""
            self.say("; ".join(notes[:3]) + more, "warning")
        self.project_opened.emit(project)
        if project.records:
            preferred = self.find(prefer_key) if prefer_key else None
            self.open_image(preferred if preferred is not None else 0)
        else:
            self.empty_reason = (f"No images in {project.folder}\n\nImages are read from the folder and its "
                                 f"subfolders ({' '.join(IMAGE_EXTENSIONS)}).\n"
                                 "Open another folder with Ctrl+O or drop one here.")
            self.say(f"No images found in {project.folder}", "info")
            self.image_changed.emit(None)
        return True

    # --- images --------------------------------------------------------------------------------
    def close_image(self) -> bool:
        """Save and close the open image. False (and the image stays) when saving failed."""
        self.tools.active.cancel()
        if self.document is not None and not self.saver.flush():
            return False
        self.saver.detach()
        self.history.deactivate()
        self.document = None
        self.image_closed.emit()
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
        self.image_selected.emit(index)
        self._merges.wait(rec.path)
        try:
            image = self.prefetcher.get(rec)
            labels, edit_mask = self.project.load_annotation(rec)
            doc = AnnotationDocument(image, labels, edit_mask, self.labelset, key=rec.path)
        except LOAD_ERRORS as exc:
            self.empty_reason = f"Cannot open {rec.path}\n\nGo to another image with A / D or the image list."
            self.say(f"Cannot open {rec.path}: {exc}")
            self.image_changed.emit(None)
            return False
        self.document = doc
        self.superpixels.start(rec.path, doc.image)
        self.saver.attach(self.project, rec, doc, self.history.stack_for(rec.path))
        self.image_changed.emit(rec)
        near = [self.order(index, d) for d in (+1, -1)]
        self.prefetcher.prefetch([self.project.records[i] for i in near if i is not None])
        return True

    def go_to(self, target) -> bool:
        """Open the image given by its record or its key (relative path)."""
        index = self.find(target if isinstance(target, str) else target.path)
        return index is not None and self.open_image(index)

    def step(self, delta: int) -> bool:
        """Previous/next image in the order the user sees (`order`)."""
        target = self.order(self.index, delta) if self.project is not None else None
        if target is None:
            self.say("No more images in that direction", "status")
            return False
        return self.open_image(target)

    def next_unreviewed(self) -> bool:
        recs = self.records
        for k in range(1, len(recs) + 1):
            i = (self.index + k) % len(recs)
            if recs[i].status != Status.REVIEWED:
                return self.open_image(i)
        if recs:
            self.say("Every image is reviewed.", "info")
        return False

    def mark_reviewed(self) -> bool:
        """Save the open image and mark it reviewed."""
        rec, doc = self.current_record, self.document
        if rec is None or not self.saver.flush():
            return False
        try:
            if not self.project.has_annotation(rec):
                self.project.save_annotation(rec, doc.labels, doc.edit_mask)
            self.project.set_status(rec, Status.REVIEWED)
        except (ProjectError, OSError, ValueError) as exc:
            self.say(f"Cannot mark {rec.path} reviewed: {exc}")
            return False
        self.status_changed.emit(rec.path)
        return True

    def mark_reviewed_and_next(self) -> bool:
        if not self.mark_reviewed():
            return False
        return self.next_unreviewed() if any(r.status != Status.REVIEWED for r in self.records) else True

    # --- editing -------------------------------------------------------------------------------
    def commit(self, text: str, labels_patch: MaskPatch | None, edit_patch: MaskPatch | None) -> None:
        """A tool finished a change (already written): count it and make it an undo step."""
        if self.document is not None:
            self.document.account(labels_patch)
        self.history.push(text, labels_patch, edit_patch)

    def undo(self) -> None:
        self.tools.active.cancel()  # a stroke or polygon in progress is finished first
        self.history.undo()

    def redo(self) -> None:
        self.tools.active.cancel()
        self.history.redo()

    def apply_proposal(self, labels: np.ndarray, text: str = "Model proposal") -> bool:
        """Replace the label map by `labels` except human-edited pixels, as one undo step.
        False when nothing changed."""
        doc = self.document
        if doc is None:
            return False
        if self.read_only:
            self.say(f"Not applied: {self.project.folder} is open read-only.", "warning")
            return False
        patch = doc.proposal_patch(labels)
        if patch is None:
            return False
        doc.apply(patch, None)  # writes, counts and repaints the changed box
        self.history.push(text, patch, None)
        return True

    def apply_labels(self, new_labels: np.ndarray, *, text: str = "Auto-segment", status=None) -> bool:
        """A whole label map from the model/CRF as one undo step; human-edited pixels are kept.
        `status` (e.g. Status.AUTO) is used at the next save unless the image has human edits."""
        changed = self.apply_proposal(new_labels, text=text)
        if status is not None and self.document is not None:
            self.saver.pending_status = Status(status)
            self.saver.schedule(force=not changed)
        return changed

    def store_proposal(self, key: str, proposal: np.ndarray) -> Future | None:
        """A proposal for image `key`: applied as an undo step when it is open, else merged into
        its saved label map (human pixels kept) on the I/O thread; `status_changed(key)` follows.
        The image's undo history is dropped (it no longer matches)."""
        if self.project is None:
            return None
        rec = self.project.record(key)
        if self.current_record is rec:
            self.apply_labels(proposal, text="Model proposal")
            return None
        project = self.project

        def done(error: BaseException | None) -> None:
            if self.project is not project:
                return
            if error is not None:
                self.say(f"Cannot store the proposal for {key}: {error}")
                self.status_changed.emit(key)
            elif self.current_record is rec:  # opened meanwhile (after the merge): its history is live
                self.status_changed.emit(key)
            else:
                self.annotation_saved_elsewhere(key)

        return self._merges.merge(project, rec, proposal, done)

    def annotation_saved_elsewhere(self, key: str) -> None:
        """The saved annotation of image `key` was replaced outside the session (a worker): drop its
        undo history and tell the views. Not for the open image."""
        self.history.drop(key)
        self.status_changed.emit(key)

    def journal_change(self, labels_patch: MaskPatch | None, edit_patch: MaskPatch | None) -> None:
        """Journal the box a change touched (after it), so it survives a crash before the save."""
        doc, rec = self.document, self.current_record
        box = union_bbox(*(p.bbox for p in (labels_patch, edit_patch) if p is not None))
        if doc is None or rec is None or box is None:
            return
        x0, y0, x1, y1 = box
        try:
            self.project.journal_edit(rec, box, doc.labels[y0:y1, x0:x1], doc.edit_mask[y0:y1, x0:x1])
        except OSError as exc:
            self.say(f"Could not journal the change of {rec.path}: {exc.strerror or exc}")

    # --- tools ---------------------------------------------------------------------------------
    def set_active_class(self, value: int) -> bool:
        if value != IGNORE and not 0 <= value < len(self.labelset):
            self.say(f"There is no class {value}", "status")
            return False
        self.tools.ctx.active_class = int(value)
        self.active_class_changed.emit(int(value))
        return True

    def class_name(self, value: int | None) -> str:
        if value == IGNORE:
            return "ignore"
        return self.labelset.names[value] if value is not None and 0 <= value < len(self.labelset) else "?"

    def set_snap_strokes(self, refine: Refiner | None) -> None:
        """Snap each finished brush stroke to image edges with `refine` (e.g. `ml.crf.refine_labels`,
        handed in: the session imports no CRF); None turns snapping off."""
        self.tools.ctx.snap = StrokeSnapper(refine) if refine is not None else None

    def _picked(self, value: int) -> None:
        if self.set_active_class(value):
            self.say(f"Picked class {value} ({self.class_name(value)})", "status")

    # --- classes (the edits: class_edits) ------------------------------------------------------
    def set_labelset(self, labelset: LabelSet, lut: np.ndarray | None = None) -> bool:
        """Replace the class list; with `lut` (after a deletion) every label map is remapped."""
        return class_edits.set_labelset(self, labelset, lut)

    def add_class(self, name: str, color=None) -> bool:
        return class_edits.edit(self, lambda ls: ls.add(name, color))

    def rename_class(self, index: int, name: str) -> bool:
        return class_edits.edit(self, lambda ls: ls.rename(index, name))

    def recolor_class(self, index: int, color) -> bool:
        return class_edits.edit(self, lambda ls: ls.recolor(index, tuple(color)))

    def delete_class(self, index: int, replacement: int = 0) -> bool:
        """Delete a class; its pixels in every image become `replacement`. Clears undo history
        (recorded patches use the old numbering)."""
        return class_edits.delete_class(self, index, replacement)

    def release_project(self) -> bool:
        """Save and close the open image and release the project's write lock, so another writer
        (an import into this folder) can take it; `open_folder` again resumes. False when the
        image could not be saved."""
        if self.project is None or not self.close_image():
            return False
        self._merges.wait()
        self.project.close()  # stays readable in memory, read-only, until reopened
        self.tools.ctx.read_only = True
        return True

    # --- background work and closing -----------------------------------------------------------
    def shutdown(self) -> None:
        """Finish background work and release the project (its write lock). Call after a
        successful `close_image()`."""
        self._merges.shutdown()
        self.superpixels.shutdown()
        self.saver.shutdown()
        if self.prefetcher is not None:
            self.prefetcher.shutdown()
        if self.project is not None:
            self.project.close()
