"""The fast CRF engine (candidate labels per pixel, stencil, own lattice) against the pydensecrf
reference on every crop, on the real VOC scenes of tests/data/voc_real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.core.labels import IGNORE, voc_colormap
from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.ml import crf_engine
from deeplab_studio.ml.crf import CRFParams, refine, refine_labels
from deeplab_studio.ml.crf_inputs import check_probs


def _indices(rgb: np.ndarray) -> np.ndarray:
    cmap = voc_colormap(21).astype(np.int64)
    table = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(cmap)}
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    uniq, inv = np.unique(packed, return_inverse=True)
    return np.array([table[int(k)] for k in uniq], np.uint8)[inv].reshape(packed.shape)


@pytest.fixture(scope="module")
def scenes(data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """id -> (image, DeepLab v3+ R101 prediction, ground truth) for the 7 val crops."""
    root = data_dir / "voc_real"
    out = {}
    for p in sorted((root / "vainf_r101_pred").iterdir()):
        image = np.asarray(Image.open(root / "images" / p.name).convert("RGB"))
        out[p.stem] = (image, _indices(np.asarray(Image.open(p).convert("RGB"))),
                       np.asarray(Image.open(root / "masks" / p.name)))
    return out


def _miou(gt: np.ndarray, labels: np.ndarray) -> float:
    cm = ConfusionMatrix(21)
    cm.update(gt, labels)
    return 100 * cm.miou()


def test_fast_engine_matches_the_pydensecrf_reference_on_real_scenes(scenes):
    """Hard labels, defaults: the same answer but for a few pixels (measured ≤ 91 of 263,169) and
    the same mIoU (measured within 0.03 points), scene by scene."""
    none = np.zeros((513, 513), bool)
    for name, (image, pred, gt) in scenes.items():
        fast = refine_labels(image, pred)
        ref = crf_engine.refine_free_pixels(image, pred, none, None, CRFParams(), reference=True)
        assert (fast != ref).mean() < 5e-4, (name, int((fast != ref).sum()))
        assert abs(_miou(gt, fast) - _miou(gt, ref)) < 0.05, name
        assert (fast != pred).sum() > 100  # the CRF did work


def test_soft_input_matches_the_reference(scenes):
    """Soft proposals (the prediction as 0.8 / 0.2 spread over three labels, blurred by a shift):
    each pixel's candidates are the labels at 1 % or more there; the same answer but for a few pixels."""
    for name in list(scenes)[:3]:
        image, pred, gt = scenes[name]
        labs = sorted(set(np.unique(pred).tolist()) | {15})
        probs = np.full((21,) + pred.shape, 1e-4, np.float32)
        for lab in labs:
            mine = (pred == lab).astype(np.float32)
            probs[lab] = 0.6 * mine + 0.3 * np.roll(mine, 9, axis=1) + 0.02
        probs /= probs.sum(axis=0)
        _, current, top = check_probs(probs, pred.shape)
        fast = refine(image, probs)
        ref = crf_engine.refine_free_pixels(image, current, np.zeros(pred.shape, bool), probs, CRFParams(),
                                            top=top, reference=True)
        assert (fast != ref).mean() < 1e-3, (name, int((fast != ref).sum()))
        assert abs(_miou(gt, fast) - _miou(gt, ref)) < 0.05, name


def test_candidates_are_per_pixel_not_per_tile(monkeypatch):
    """Five labels in one tile, each pixel near two of them: the mean-field carries two candidates
    per busy pixel (plus one-candidate context), not five everywhere."""
    from deeplab_studio.ml import crf_meanfield

    seen = []
    real = crf_meanfield.solve

    def spy(unary, candidate, *args, **kwargs):
        seen.append((unary.shape[0], candidate.sum(axis=0)))
        return real(unary, candidate, *args, **kwargs)
    monkeypatch.setattr(crf_engine, "solve", spy)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5, dtype=np.uint8), 40)[None, :].repeat(64, axis=0)  # five stripes
    image = (labels[..., None] * 50 + rng.integers(0, 10, labels.shape + (3,))).astype(np.uint8)
    out = refine_labels(image, np.roll(labels, 3, axis=1), params=CRFParams(margin=8))
    (n, counts), = seen
    assert n == 5 and counts.max() == 2 and counts.mean() < 2
    assert (out[:, 8:-8] == labels[:, 8:-8]).mean() > 0.95  # snapped back to the colour edges


def test_void_and_protected_pixels_in_the_fast_engine(scenes):
    image, pred, _ = scenes["2007_000033"]
    labels = pred.copy()
    labels[200:210, :] = IGNORE
    protect = np.zeros(pred.shape, bool)
    protect[150:260, 100:300] = True
    labels[230:240, 150:250] = 9  # a label the model never proposed, painted by a human
    out = refine_labels(image, labels, protect=protect)
    assert (out[protect] == labels[protect]).all()
    assert ((out == IGNORE) == (labels == IGNORE)).all()
    assert 9 not in np.unique(out[~protect])  # 9 lies farther than `margin` from every free pixel
