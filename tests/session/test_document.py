"""The Qt-free document model: events, patches, proposals that spare human pixels."""

from __future__ import annotations

import sys
import subprocess

import numpy as np

from deeplab_studio.core.patches import diff_to_patch
from deeplab_studio.session.document import AnnotationDocument


def _doc(h=6, w=8):
    return AnnotationDocument(np.zeros((h, w, 3), np.uint8))


def test_apply_revert_emit_changed_boxes():
    doc = _doc()
    seen = []
    doc.changed.connect(seen.append)
    new = doc.labels.copy()
    new[1:3, 2:5] = 4
    lp = diff_to_patch(doc.labels, new)
    doc.apply(lp, None)
    assert (doc.labels == new).all() and seen == [(2, 1, 5, 3)]
    assert doc.class_counts()[4] == 6
    doc.revert(lp, None)
    assert not doc.labels.any() and doc.class_counts()[4] == 0


def test_proposal_never_touches_edited_pixels():
    doc = _doc()
    doc.labels[0, 0] = 7
    doc.edit_mask[0, 0] = True
    proposal = np.full(doc.labels.shape, 3, np.uint8)
    patch = doc.proposal_patch(proposal)
    doc.apply(patch, None)
    assert doc.labels[0, 0] == 7
    assert (doc.labels.ravel()[1:] == 3).all()
    assert doc.proposal_patch(doc.labels.copy()) is None


def test_remap_emits_reset():
    doc = _doc()
    doc.labels[:] = 5
    fired = []
    doc.reset.connect(lambda: fired.append(1))
    lut = np.arange(256, dtype=np.uint8)
    lut[5] = 2
    doc.remap(lut)
    assert fired == [1] and (doc.labels == 2).all()


def test_document_and_tools_import_without_qt():
    code = ("import sys; import deeplab_studio.session.annotation_session; "
            "print('PySide6' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
