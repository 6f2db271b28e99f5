"""Undo history and saving as the session sees them: two small protocols, and a Qt-free
implementation of each for headless use (scripts, the simulated annotator, session tests).

The window passes its own Qt implementations instead (`gui.undo.UndoManager` with `QUndoStack`s
for the History view, `gui.autosave.AutoSaver` with a debounce timer); the session calls only
the methods named here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from deeplab_studio.core.patches import MaskPatch
from deeplab_studio.session.document import AnnotationDocument
from deeplab_studio.session.events import Event

#: told after a change is pushed, undone or redone (the session journals the touched box there)
Changed = Callable[[MaskPatch | None, MaskPatch | None], None]


class Stack(Protocol):
    def isClean(self) -> bool: ...  # noqa: N802 - QUndoStack's spelling
    def setClean(self) -> None: ...  # noqa: N802
    def index(self) -> int: ...


class History(Protocol):
    def stack_for(self, key: str) -> Stack: ...
    def deactivate(self) -> None: ...
    def push(self, text: str, labels_patch: MaskPatch | None, edit_patch: MaskPatch | None) -> None: ...
    def undo(self) -> None: ...
    def redo(self) -> None: ...
    def drop(self, key: str) -> None: ...
    def clear_all(self) -> None: ...


class Saver(Protocol):
    pending_status: Any
    stack: Stack | None  # the open image's stack (set by `attach`)
    saved: Any  # `.connect(callback(record))`: an annotation was written
    failed: Any  # `.connect(callback(message))`: a save failed (one line naming the file)

    def attach(self, project, record, document: AnnotationDocument | None, stack: Stack | None) -> None: ...
    def detach(self) -> None: ...
    def dirty(self) -> bool: ...
    def schedule(self, *, force: bool = False) -> None: ...
    def flush(self) -> bool: ...
    def shutdown(self) -> None: ...


class PatchStack:
    """One image's changes: (text, labels patch, edit patch) entries, the current index and the
    index at the last save."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, MaskPatch | None, MaskPatch | None]] = []
        self._index = 0
        self._clean: int | None = 0

    def index(self) -> int:
        return self._index

    def isClean(self) -> bool:  # noqa: N802
        return self._clean == self._index

    def setClean(self) -> None:  # noqa: N802
        self._clean = self._index


class PatchHistory:
    """Per-image stacks of patches (Qt-free `History`); undo/redo act on the active image."""

    def __init__(self, document: Callable[[], AnnotationDocument | None], *, changed: Changed | None = None) -> None:
        self._document = document
        self._changed = changed
        self._stacks: dict[str, PatchStack] = {}
        self.active: PatchStack | None = None

    def stack_for(self, key: str) -> PatchStack:
        self.active = self._stacks.setdefault(key, PatchStack())
        return self.active

    def deactivate(self) -> None:
        self.active = None

    def push(self, text: str, labels_patch: MaskPatch | None, edit_patch: MaskPatch | None) -> None:
        stack = self.active
        if stack is None or (labels_patch is None and edit_patch is None):
            return
        del stack.entries[stack._index:]
        if stack._clean is not None and stack._clean > stack._index:
            stack._clean = None  # the saved state was undone and then replaced: unreachable now
        stack.entries.append((text, labels_patch, edit_patch))
        stack._index += 1
        self._tell(labels_patch, edit_patch)

    def undo(self) -> None:
        stack, doc = self.active, self._document()
        if stack is None or doc is None or stack._index == 0:
            return
        stack._index -= 1
        _, lp, ep = stack.entries[stack._index]
        doc.revert(lp, ep)
        self._tell(lp, ep)

    def redo(self) -> None:
        stack, doc = self.active, self._document()
        if stack is None or doc is None or stack._index == len(stack.entries):
            return
        _, lp, ep = stack.entries[stack._index]
        stack._index += 1
        doc.apply(lp, ep)
        self._tell(lp, ep)

    def drop(self, key: str) -> None:
        if self._stacks.pop(key, None) is self.active:
            self.active = None

    def clear_all(self) -> None:
        for stack in self._stacks.values():
            stack.entries.clear()
            stack._index, stack._clean = 0, 0

    def _tell(self, lp: MaskPatch | None, ep: MaskPatch | None) -> None:
        if self._changed is not None:
            self._changed(lp, ep)


def save_failure(record, exc: BaseException) -> str:
    """The one line a failed save reports: the file and the reason (an OSError's own words)."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"Could not save the annotation of {record.path}: {reason}"


class SaveTarget:
    """What every `Saver` follows: the open image's project, record, document and undo stack, the
    status to give its next save, and whether it has unsaved changes."""

    project: Any = None
    record: Any = None
    document: AnnotationDocument | None = None
    stack: Stack | None = None
    pending_status: Any = None
    _forced = False  # a change outside the undo stack (e.g. a class deletion remap) is unsaved
    saved: Any  # set by the subclass: `.emit(record)` after a write
    failed: Any  # set by the subclass: `.emit(line)` when a write failed

    def attach(self, project, record, document: AnnotationDocument | None, stack: Stack | None) -> None:
        """Follow another image (flush the previous one first)."""
        self.project, self.record, self.document, self.stack = project, record, document, stack
        self._forced, self.pending_status = False, None

    def detach(self) -> None:
        self.attach(None, None, None, None)

    def dirty(self) -> bool:
        return self.document is not None and (self._forced or (self.stack is not None and not self.stack.isClean()))

    def _status(self, edit_mask: np.ndarray):
        """The pending status (e.g. auto after a model run) unless a human has painted."""
        return None if self.pending_status is None or edit_mask.any() else self.pending_status

    def _save_now(self) -> bool:
        """Write the open image's annotation in this thread when it is dirty; tell `saved(record)`
        or `failed(line)` (the subclass's signals). True when the file on disk is up to date."""
        if not self.dirty():
            return True
        rec, doc = self.record, self.document
        try:
            self.project.save_annotation(rec, doc.labels, doc.edit_mask, status=self._status(doc.edit_mask),
                                         journal_seq=self.project.journal_last(rec))
        except Exception as exc:  # noqa: BLE001 - reported, never raised: the session goes on
            self.failed.emit(save_failure(rec, exc))
            return False
        self._mark_clean()
        self.saved.emit(rec)
        return True

    def _mark_clean(self) -> None:
        self._forced, self.pending_status = False, None
        if self.stack is not None:
            self.stack.setClean()


class DirectSaver(SaveTarget):
    """A Qt-free `Saver`: nothing happens until `flush()`, which saves the open image in the
    calling thread when its stack is not clean (or a change outside the stack was scheduled)."""

    def __init__(self) -> None:
        self.saved = Event()
        self.failed = Event()

    def schedule(self, *, force: bool = False) -> None:
        self._forced = self._forced or force

    def flush(self) -> bool:
        return self._save_now()

    def shutdown(self) -> None:
        self.flush()
