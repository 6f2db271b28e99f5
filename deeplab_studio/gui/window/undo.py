"""Undo: a `QUndoCommand` per stroke/fill/polygon/proposal wrapping its `MaskPatch` pair, and one
`QUndoStack` per image kept in a `QUndoGroup` while the app runs.

Commands hold only patches (memory = touched area). They act on whatever document is open for
their image, so stacks survive closing and reopening an image (the saved file equals the state
at the stack's current index, because switching images saves first).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from PySide6.QtGui import QUndoCommand, QUndoGroup, QUndoStack
from PySide6.QtCore import QObject

from deeplab_studio.core.patches import MaskPatch
from deeplab_studio.session.document import AnnotationDocument

Changed = Callable[[MaskPatch | None, MaskPatch | None], None]  # told after a change is (re)applied or undone

UNDO_LIMIT = 500  # steps per image
MEMORY_BUDGET = 1 << 30  # bytes of patches across all images; older images' history goes first


class PatchCommand(QUndoCommand):
    """One recorded change. The change is already applied when pushed; the first redo is a no-op."""

    def __init__(self, document: Callable[[], AnnotationDocument | None], text: str,
                 labels_patch: MaskPatch | None, edit_patch: MaskPatch | None, changed: Changed | None = None) -> None:
        super().__init__(text)
        self._document = document
        self._changed = changed
        self.labels_patch, self.edit_patch = labels_patch, edit_patch
        self._applied = True

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in (self.labels_patch, self.edit_patch) if p is not None)

    def redo(self) -> None:
        if self._applied:
            return
        doc = self._document()
        if doc is not None:
            doc.apply(self.labels_patch, self.edit_patch)
            if self._changed is not None:
                self._changed(self.labels_patch, self.edit_patch)
        self._applied = True

    def undo(self) -> None:
        doc = self._document()
        if doc is not None:
            doc.revert(self.labels_patch, self.edit_patch)
            if self._changed is not None:
                self._changed(self.labels_patch, self.edit_patch)
        self._applied = False


class UndoManager(QObject):
    """Per-image undo stacks in one `QUndoGroup`; the active stack follows the open image."""

    def __init__(self, document: Callable[[], AnnotationDocument | None], parent=None,
                 *, limit: int = UNDO_LIMIT, budget: int = MEMORY_BUDGET, changed: Changed | None = None) -> None:
        """`changed(labels_patch, edit_patch)` is called after every push, undo and redo (the
        window journals the touched box there, so a finished change survives a crash)."""
        super().__init__(parent)
        self._changed = changed
        self.group = QUndoGroup(self)
        self._document = document
        self._stacks: OrderedDict[str, QUndoStack] = OrderedDict()
        self.limit, self.budget = limit, budget
        self._pushed = 0  # bytes pushed since the last exact count (>= true memory)

    def stack_for(self, key: str) -> QUndoStack:
        """The stack of image `key` (created on first use) made active."""
        stack = self._stacks.get(key)
        if stack is None:
            stack = QUndoStack(self.group)
            stack.setUndoLimit(self.limit)
            self._stacks[key] = stack
        self._stacks.move_to_end(key)
        self.group.setActiveStack(stack)
        return stack

    @property
    def active(self) -> QUndoStack | None:
        return self.group.activeStack()

    def deactivate(self) -> None:
        self.group.setActiveStack(None)

    def undo(self) -> None:
        self.group.undo()

    def redo(self) -> None:
        self.group.redo()

    def push(self, text: str, labels_patch: MaskPatch | None, edit_patch: MaskPatch | None) -> None:
        stack = self.active
        if stack is None or (labels_patch is None and edit_patch is None):
            return
        cmd = PatchCommand(self._document, text, labels_patch, edit_patch, self._changed)
        self._pushed += cmd.nbytes
        stack.push(cmd)
        if self._changed is not None:
            self._changed(labels_patch, edit_patch)
        if self._pushed > self.budget:  # only then count exactly (an upper bound until here)
            self._enforce_budget()
            self._pushed = self.memory()

    def memory(self) -> int:
        total = 0
        for stack in self._stacks.values():
            for i in range(stack.count()):
                cmd = stack.command(i)
                total += cmd.nbytes if isinstance(cmd, PatchCommand) else 0
        return total

    def _enforce_budget(self) -> None:
        """Drop whole histories of the least recently opened images while over budget."""
        active = self.active
        for key in list(self._stacks):
            if self.memory() <= self.budget:
                return
            stack = self._stacks[key]
            if stack is not active:
                stack.clear()

    def drop(self, key: str) -> None:
        """Forget the history of image `key` (its saved map changed outside the stack)."""
        stack = self._stacks.pop(key, None)
        if stack is not None:
            if stack is self.active:
                self.group.setActiveStack(None)
            self.group.removeStack(stack)
            stack.deleteLater()

    def clear_all(self) -> None:
        """Forget every history (after a change that invalidates patches, e.g. a class deletion)."""
        for stack in self._stacks.values():
            stack.clear()
