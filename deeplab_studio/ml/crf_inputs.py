"""Checks of what ``ml.crf``'s public functions are given: one ValueError naming the problem."""

from __future__ import annotations

import numpy as np

from .crf_params import MAX_LABELS, CRFParams


def check_params(params: CRFParams | None) -> CRFParams:
    """``params``, or the defaults for None; ValueError for anything but a CRFParams."""
    if params is None:
        return CRFParams()
    if not isinstance(params, CRFParams):
        raise ValueError(f"params must be a CRFParams, got {type(params).__name__}")
    return params


def check_image(image: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 RGB; grayscale is replicated, an alpha channel dropped, other dtypes refused."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be H×W, H×W×3 or H×W×4, got shape {image.shape}")
    image = image[:, :, :3]
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    if image.dtype != np.uint8:
        if image.dtype.kind not in "ui":
            raise ValueError(f"image must be uint8 (0..255), got dtype {image.dtype}")
        if image.min() < 0 or image.max() > 255:
            raise ValueError(f"image values must lie in 0..255, got {image.min()}..{image.max()}")
        image = image.astype(np.uint8)
    return image


def check_labels(labels: np.ndarray, shape: tuple[int, int], what: str = "labels") -> np.ndarray:
    """An integer H×W label map of ``shape`` as uint8 (values 0..255); ValueError otherwise."""
    if not isinstance(labels, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(labels).__name__}")
    if labels.ndim != 2:
        raise ValueError(f"{what} must be a 2-D H×W array, got shape {labels.shape}")
    if labels.shape != shape:
        raise ValueError(f"{what} size {labels.shape} does not match the image size {shape}")
    if labels.dtype == np.uint8:
        return labels
    if labels.dtype.kind not in "uib":
        raise ValueError(f"{what} must be an integer label map (uint8), got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{what} values must lie in 0..255, got {labels.min()}..{labels.max()}")
    return labels.astype(np.uint8)


def check_protect(protect: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """A boolean H×W mask of ``shape`` (all False for None); ValueError otherwise."""
    if protect is None:
        return np.zeros(shape, dtype=bool)
    if not isinstance(protect, np.ndarray):
        raise ValueError(f"protect must be a numpy array, got {type(protect).__name__}")
    if protect.shape != shape:
        raise ValueError(f"protect mask size {protect.shape} does not match the image size {shape}")
    if protect.dtype != bool:
        if protect.dtype.kind not in "uib" or (protect.size and not np.isin(protect, (0, 1)).all()):
            raise ValueError(f"protect must be a boolean mask, got dtype {protect.dtype}")
        protect = protect.astype(bool)
    return protect


def check_probs(probs: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate C×H×W probabilities; returns (probs, argmax uint8 H×W, top probability float32 H×W).

    Works in blocks of rows, so a large float16/float32 input costs no full-size temporaries.
    """
    if not isinstance(probs, np.ndarray):
        raise ValueError(f"probs must be a numpy array, got {type(probs).__name__}")
    if probs.ndim != 3:
        raise ValueError(f"probs must be C×H×W, got shape {probs.shape}")
    if probs.shape[1:] != shape:
        raise ValueError(f"probs size {probs.shape[1:]} does not match the image size {shape}")
    if not 1 <= probs.shape[0] <= MAX_LABELS:
        raise ValueError(f"probs must have 1..{MAX_LABELS} classes, got {probs.shape[0]}")
    if probs.dtype.kind != "f":
        raise ValueError(f"probs must be floating point (softmax output), got dtype {probs.dtype}")
    best = np.empty(shape, dtype=np.uint8)
    top = np.empty(shape, dtype=np.float32)
    rows = max(1, 2**22 // max(1, probs.shape[0] * shape[1]))
    for y in range(0, shape[0], rows):
        block = probs[:, y:y + rows]
        if not np.isfinite(block).all():
            raise ValueError("probs contain NaN or infinite values")
        if block.min() < 0 or block.max() > 1 + 1e-3:
            raise ValueError("probs must be probabilities in 0..1 (softmax output, not logits)")
        best[y:y + rows] = block.argmax(axis=0)
        top[y:y + rows] = block.max(axis=0)
    return probs, best, top
