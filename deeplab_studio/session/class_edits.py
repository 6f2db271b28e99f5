"""Class-list edits of an `AnnotationSession` (add, rename, recolor, delete, replace).

Functions of the session, which keeps one method per edit that calls them: each edit works on a
copy of the label set, says why it was refused, and lands through the session's `set_labelset` (project
first, then the open document, then `labels_changed`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from deeplab_studio.core.labels import LabelSet
from deeplab_studio.storage.project import ProjectError

if TYPE_CHECKING:
    from deeplab_studio.session.annotation_session import AnnotationSession


def set_labelset(session: AnnotationSession, labelset: LabelSet, lut: np.ndarray | None = None) -> bool:
    """Replace the class list; with `lut` (after a deletion) every label map is remapped."""
    labelset = LabelSet(list(labelset.names), list(labelset.colors))
    if session.project is not None:
        if not session.saver.flush():
            return False
        try:
            session.project.set_labelset(labelset, lut)
        except (ProjectError, OSError, ValueError) as exc:
            session.say(f"Cannot change the classes: {exc}")
            return False
        labelset = session.project.labels
    session.labelset = labelset
    if session.document is not None:
        session.document.labelset = labelset
        if lut is not None:
            session.document.remap(lut)
    session.labels_changed.emit(labelset)
    return True


def edited(session: AnnotationSession, change: Callable[[LabelSet], object]) -> tuple[LabelSet, object] | None:
    """A copy of the session's label set after `change(copy)` and what `change` returned; None
    (and the reason said) when the change was refused."""
    labelset = LabelSet.from_json(session.labelset.to_json())
    try:
        return labelset, change(labelset)
    except (ValueError, KeyError) as exc:
        session.say(str(exc))
        return None


def edit(session: AnnotationSession, change: Callable[[LabelSet], object]) -> bool:
    """Apply `change` to a copy of the label set and make it the session's."""
    got = edited(session, change)
    return got is not None and session.set_labelset(got[0])


def delete_class(session: AnnotationSession, index: int, replacement: int = 0) -> bool:
    """Delete class `index`; its pixels in every image become `replacement`. Clears the undo
    history (recorded patches use the old numbering)."""
    got = edited(session, lambda ls: ls.delete(index, replacement=replacement))
    if got is None or not session.set_labelset(got[0], got[1]):
        return False
    session.history.clear_all()
    if session.document is not None and session.project is not None:
        session.saver.stack.setClean()  # the remapped map equals the remapped file on disk
    return True
