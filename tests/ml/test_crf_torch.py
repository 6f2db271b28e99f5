"""The torch mean-field (`crf_torch.refine_torch`) against the CPU engine on real VOC scenes: on the
CPU here, on CUDA in the tests marked `gpu` (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_studio.core.labels import IGNORE, voc_colormap
from deeplab_studio.core.metrics import ConfusionMatrix
from deeplab_studio.ml.crf import CRFParams, CRFSession, refine, refine_labels
from deeplab_studio.ml.crf_torch import refine_torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _scenes(data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    root = data_dir / "voc_real"
    cmap = voc_colormap(21).astype(np.int64)
    table = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(cmap)}
    out = {}
    for p in sorted((root / "vainf_r101_pred").iterdir()):
        rgb = np.asarray(Image.open(p).convert("RGB")).astype(np.int64)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        uniq, inv = np.unique(packed, return_inverse=True)
        pred = np.array([table[int(k)] for k in uniq], np.uint8)[inv].reshape(packed.shape)
        out[p.stem] = (np.asarray(Image.open(root / "images" / p.name).convert("RGB")), pred,
                       np.asarray(Image.open(root / "masks" / p.name)))
    return out


@pytest.fixture(scope="module")
def scenes(data_dir):
    return _scenes(data_dir)


def _miou(gt: np.ndarray, labels: np.ndarray) -> float:
    cm = ConfusionMatrix(21)
    cm.update(gt, labels)
    return 100 * cm.miou()


def _agree(image: np.ndarray, pred: np.ndarray, gt: np.ndarray, device: str) -> None:
    """Hard labels and a soft proposal: the torch answer is the CPU engine's but for a few pixels
    (measured on the CPU: at most 82 of 263,169), at the same mIoU."""
    ours = refine_labels(image, pred)
    theirs = refine_torch(image, labels=pred, device=device)
    assert (ours != theirs).mean() < 5e-4 and abs(_miou(gt, ours) - _miou(gt, theirs)) < 0.05
    probs = np.stack([pred == 0, pred != 0]).astype(np.float32) * 0.8 + 0.1
    probs = 0.7 * probs + 0.3 * np.roll(probs, 6, axis=2)
    ours, theirs = refine(image, probs), refine_torch(image, probs, device=device)
    assert (ours != theirs).mean() < 5e-4, int((ours != theirs).sum())


def test_torch_on_the_cpu_agrees_with_the_cpu_engine(scenes, one_torch_thread):
    for name in ("2007_000033", "2009_005189"):
        _agree(*scenes[name], device="cpu")


def test_torch_keeps_protected_and_void_pixels_and_uses_a_session(scenes, one_torch_thread):
    image, pred, _ = scenes["2007_000676"]
    labels = pred.copy()
    labels[100:110] = IGNORE
    protect = np.zeros(pred.shape, bool)
    protect[200:300, 150:350] = True
    labels[240:250, 200:300] = 7
    session = CRFSession(image)
    out = refine_torch(image, labels=labels, protect=protect, device="cpu", lattices=session)
    assert (out[protect] == labels[protect]).all()
    assert ((out == IGNORE) == (labels == IGNORE)).all()
    again = refine_torch(image, labels=labels, protect=protect, device="cpu", lattices=session)
    assert (again == out).all() and session.hits > 0
    with pytest.raises(ValueError, match="probs or labels"):
        refine_torch(image)
    params = CRFParams(gaussian_compat=0, bilateral_compat=0)  # no pairwise term: the unary decides
    assert (refine_torch(image, labels=pred, params=params, device="cpu") == pred).all()


@pytest.mark.gpu
@CUDA
def test_cuda_agrees_with_the_cpu_engine_on_every_real_scene(scenes):
    for image, pred, gt in scenes.values():
        _agree(image, pred, gt, device="cuda")


@pytest.mark.gpu
@CUDA
def test_cuda_large_image_completes_in_tiles(scenes):
    image, pred, _ = scenes["2007_000033"]
    big = np.asarray(Image.fromarray(image).resize((3000, 2000), Image.BILINEAR))
    labels = np.asarray(Image.fromarray(pred).resize((3000, 2000), Image.NEAREST))
    out = refine_torch(big, labels=labels, device="cuda")
    assert out.shape == labels.shape and set(np.unique(out)) <= set(np.unique(labels))
    assert (out != labels).mean() < 0.05 and (out != labels).any()
