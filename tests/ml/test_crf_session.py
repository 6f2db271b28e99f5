"""`CRFSession`: repeated refinements of one image reuse its kernels and answer exactly what the
one-shot functions answer (real VOC image, R101 prediction)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import voc_colormap
from deeplab_studio.ml.crf import CRFParams, CRFSession, ProposalCRF, SessionLender, refine, refine_labels, session_for


@pytest.fixture(scope="module")
def scene(data_dir) -> tuple[np.ndarray, np.ndarray]:
    root = data_dir / "voc_real"
    image = np.asarray(Image.open(root / "images" / "2009_005189.png").convert("RGB"))
    rgb = np.asarray(Image.open(root / "vainf_r101_pred" / "2009_005189.png").convert("RGB")).astype(np.int64)
    cmap = voc_colormap(21).astype(np.int64)
    pred = np.zeros(rgb.shape[:2], np.uint8)
    for i, c in enumerate(cmap):
        pred[(rgb == c).all(axis=2)] = i
    return image, pred


def test_a_snap_sequence_answers_like_one_shot_calls(scene):
    """Snap, paint, snap again (the band moves: the region's lattice is built once), preview with
    other weights (every kernel kept): each answer equals the one-shot call's, bit for bit."""
    image, pred = scene
    session = CRFSession(image)
    first = session.refine_labels(pred)
    assert (first == refine_labels(image, pred)).all()
    painted = first.copy()
    painted[300:340, 100:200] = 1  # a human stroke of the object's label
    protect = np.zeros(pred.shape, bool)
    protect[300:340, 100:200] = True
    second = session.refine_labels(painted, protect=protect)
    assert (second == refine_labels(image, painted, protect=protect)).all()
    assert (second != painted).any()
    misses = session.misses
    for params in (CRFParams(bilateral_compat=5), CRFParams(iterations=4, hard_confidence=0.8)):
        preview = session.refine_labels(painted, protect=protect, params=params)
        assert (preview == refine_labels(image, painted, protect=protect, params=params)).all()
    assert session.misses == misses  # the previews built nothing
    wider = CRFParams(bilateral_srgb=8)
    assert (session.refine_labels(painted, params=wider) == refine_labels(image, painted, params=wider)).all()
    assert session.misses > misses  # another kernel width: another lattice


def test_soft_input_and_the_model_setting_through_a_session(scene):
    image, pred = scene
    probs = np.stack([pred == 0, pred == 1]).astype(np.float32)
    probs = 0.75 * probs + 0.25 * np.roll(probs, 7, axis=1)
    session = CRFSession(image)
    assert (session.refine(probs) == refine(image, probs)).all()
    card = ProposalCRF(CRFParams(hard_confidence=0.95, bilateral_sxy=80, bilateral_srgb=20), use_probs=False)
    for crf in (card, ProposalCRF()):
        assert (crf(image, probs, session=session) == crf(image, probs)).all()


def test_session_for_keeps_a_session_while_the_pixels_match(scene):
    image, pred = scene
    session = session_for(image, None)
    assert session_for(image, session) is session
    assert session_for(image.copy(), session) is session  # equal pixels, another array
    other = image.copy()
    other[0, 0] ^= 1
    assert session_for(other, session) is not session
    assert not session.matches(image[:100])
    # a session used with another image (ProposalCRF) is ignored, not trusted
    assert (ProposalCRF()(other, np.stack([pred == 0, pred == 1]).astype(np.float32), session=session)
            == refine(other, np.stack([pred == 0, pred == 1]).astype(np.float32))).all()


def test_a_small_budget_keeps_little_and_answers_the_same(scene):
    image, pred = scene
    session = CRFSession(image, budget=1)
    for params in (CRFParams(), replace(CRFParams(), bilateral_srgb=9)):
        assert (session.refine_labels(pred, params=params) == refine_labels(image, pred, params=params)).all()
    assert len(session._kept) == 1
    session.clear()
    assert session.nbytes == 0


def test_prepare_builds_the_lattice_ahead_and_answers_the_same(scene):
    image, pred = scene
    session = CRFSession(image)
    assert session.prepare() == 1  # one tile region: the whole 513² image
    built = session.misses
    out = session.refine_labels(pred)
    assert (out == refine_labels(image, pred)).all()
    lattices = [k for k in session._kept if k[0] == "lattice"]
    assert len(lattices) == 1 and session.misses == built + 2  # the kernel and stencil, not the lattice
    assert CRFSession(image, budget=1000).prepare() == 0  # over the budget: nothing built


def test_the_lender_keeps_one_warm_session_and_never_lends_it_twice(scene):
    image, pred = scene
    lender = SessionLender()
    with lender.lend(image) as first:
        answer = first.refine_labels(pred)
        with lender.lend(image) as meanwhile:  # another thread's call while the first runs
            assert meanwhile is not first
    with lender.lend(image) as again:
        assert again is first  # the one handed back last (`meanwhile` came back before `first`)
        misses = again.misses
        assert (again.refine_labels(pred, params=CRFParams(bilateral_compat=5))
                == refine_labels(image, pred, params=CRFParams(bilateral_compat=5))).all()
        assert again.misses == misses  # the kept kernels served the preview
    assert (answer == refine_labels(image, pred)).all()
    other = image.copy()
    other[0, 0] ^= 1
    with lender.lend(other) as fresh:
        assert fresh is not first and fresh.matches(other)
    lender.clear()
    with lender.lend(other) as after_clear:
        assert after_clear is not fresh
