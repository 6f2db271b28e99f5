"""Training augmentation for (image, label map) pairs: scale, crop with padding, flip, colour jitter.

Everything is driven by a ``numpy.random.Generator`` so a sample's augmentation is reproducible
from its seed, whichever DataLoader worker draws it. Scale, crop, padding and flip are one
``cv2.warpAffine`` per array (bilinear for the image, nearest for the labels), so a 2× scale of a
large image never materialises the full scaled image. Padding is the ImageNet mean colour for
the image (image edges replicate under interpolation, so no mean colour bleeds in) and 255
(ignore) for the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deeplab_studio.core.labels import IGNORE

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
MEAN_PIXEL: tuple[int, int, int] = tuple(int(round(m * 255)) for m in IMAGENET_MEAN)  # (124, 116, 104)


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random training transform."""

    crop: int = 513
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    jitter: float = 0.2  # brightness/contrast/saturation factors drawn from [1 - j, 1 + j]; 0 = off


def random_scale_crop(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    crop: int,
    scale: tuple[float, float] = (0.5, 2.0),
    flip: bool = True,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Scale by a factor drawn from ``scale``, then take a ``crop``×``crop`` window.

    Where the scaled image is smaller than the crop it lands at a random place and the rest is
    padding (mean colour / 255). Returns ``(image, labels, valid_box)`` where ``valid_box`` =
    (x0, y0, x1, y1) is the part of the crop covered by the image.
    """
    _check_pair(image, labels)
    h, w = labels.shape
    s = float(rng.uniform(*scale))
    sh, sw = max(1, round(h * s)), max(1, round(w * s))
    ty = float(rng.integers(min(0, crop - sh), max(0, crop - sh) + 1))
    tx = float(rng.integers(min(0, crop - sw), max(0, crop - sw) + 1))
    sy, sx = sh / h, sw / w
    ox, oy = tx + 0.5 * sx - 0.5, ty + 0.5 * sy - 0.5  # pixel-centre aligned scaling
    do_flip = flip and bool(rng.random() < 0.5)
    if do_flip:  # mirror inside the warp: x' = crop - 1 - (sx * x + ox)
        m = np.array([[-sx, 0, crop - 1 - ox], [0, sy, oy]], np.float64)
        x0, x1 = crop - int(tx) - sw, crop - int(tx)
    else:
        m = np.array([[sx, 0, ox], [0, sy, oy]], np.float64)
        x0, x1 = int(tx), int(tx) + sw
    # edge pixels replicate (no mean colour bleeding into the image), then the padding is set
    out_img = cv2.warpAffine(image, m, (crop, crop), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out_lab = cv2.warpAffine(labels, m, (crop, crop), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE)
    y0, y1 = int(ty), int(ty) + sh
    box = (max(0, x0), max(0, y0), min(crop, x1), min(crop, y1))
    if box != (0, 0, crop, crop):
        inside = out_img[box[1]:box[3], box[0]:box[2]].copy()
        out_img[:] = MEAN_PIXEL
        out_img[box[1]:box[3], box[0]:box[2]] = inside
    return out_img, out_lab, box


def color_jitter(image: np.ndarray, rng: np.random.Generator, amount: float = 0.2) -> np.ndarray:
    """Random brightness, contrast and saturation, each a factor in [1 - amount, 1 + amount]."""
    if amount <= 0 or image.size == 0:
        return image
    b, c, s = rng.uniform(1 - amount, 1 + amount, 3)
    x = image.astype(np.float32) * b
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = grey[..., None] + (x - grey[..., None]) * s
    x = (x - grey.mean()) * c + grey.mean()
    return np.clip(x, 0, 255).astype(np.uint8)


def augment(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, params: AugmentParams
) -> tuple[np.ndarray, np.ndarray]:
    """The full training transform: ``crop``×``crop`` uint8 image and label map."""
    img, lab, (x0, y0, x1, y1) = random_scale_crop(image, labels, rng, params.crop, params.scale, params.flip)
    if params.jitter > 0 and x1 > x0 and y1 > y0:
        img[y0:y1, x0:x1] = color_jitter(img[y0:y1, x0:x1], rng, params.jitter)  # padding stays mean
    return img, lab


def _check_pair(image: np.ndarray, labels: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 H×W×3, not {image.dtype} {image.shape}")
    if labels.shape != image.shape[:2] or labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8 {image.shape[:2]}, not {labels.dtype} {labels.shape}")
