"""The Qt undo manager: per-image QUndoStacks and their memory budget."""

from __future__ import annotations

import numpy as np

from deeplab_studio.core.patches import diff_to_patch
from deeplab_studio.session.document import AnnotationDocument

def _doc(h=6, w=8):
    return AnnotationDocument(np.zeros((h, w, 3), np.uint8))


def test_undo_memory_budget_drops_other_images_history(qtbot):
    from deeplab_studio.gui.window.undo import UndoManager

    doc = _doc(40, 40)
    undo = UndoManager(lambda: doc, budget=3000)
    for key in ("a", "b"):
        undo.stack_for(key)
        for v in (1, 2):
            new = doc.labels.copy()
            new[:] = v + (10 if key == "b" else 0)
            undo.push("fill", diff_to_patch(doc.labels, new), None)
            doc.labels[:] = new
    assert undo.stack_for("b").count() == 2  # the active image keeps its history
    assert undo.stack_for("a").count() == 0  # 4 patches × 3200 B > budget: the older image's went
    assert undo.memory() <= 2 * 3200
