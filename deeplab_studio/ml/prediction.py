"""A prediction at full image size: the result, the outputs it is filled into block by block,
and the stitching of overlapping tiles into them (memory beyond the outputs: one tile plus the
cross-fade strips, never all tiles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from deeplab_studio.ml.tiling import blend_weights, support, tile_grid

from .errors import PredictionError


@dataclass
class Prediction:
    """A model's answer for one image, all at full image size.

    `probs` is C×H×W (float32, or float16 if asked; None when the Predictor keeps no
    probabilities), `labels` the argmax as uint8 H×W, `confidence` the max probability (float32 H×W).
    """

    probs: np.ndarray | None
    labels: np.ndarray
    confidence: np.ndarray

    @property
    def num_classes(self) -> int | None:
        return None if self.probs is None else int(self.probs.shape[0])


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Check/convert an input image to uint8 H×W×3 (gray and RGBA are converted)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        what = f"dtype {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected a uint8 H×W×3 RGB image, got {what}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected a uint8 H×W×3 RGB image, got shape {image.shape}")
    return image


def softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1, in place (no second full-size buffer)."""
    logits -= logits.amax(dim=1, keepdim=True)
    logits.exp_()
    logits /= logits.sum(dim=1, keepdim=True)
    return logits


def upsample_rows(small: torch.Tensor, height: int, width: int, y0: int, y1: int) -> torch.Tensor:
    """Rows `y0..y1` of `small` (C×h×w) resized bilinearly (half-pixel centres) to height×width.

    The same values as `F.interpolate(..., mode="bilinear", align_corners=False)` cropped to the
    rows, computed with `grid_sample` so that memory is O(band).
    """
    gx = (torch.arange(width, dtype=torch.float32) + 0.5) * (2 / width) - 1
    gy = (torch.arange(y0, y1, dtype=torch.float32) + 0.5) * (2 / height) - 1
    grid = torch.stack((gx[None, :].expand(len(gy), -1), gy[:, None].expand(-1, width)), dim=-1)
    out = F.grid_sample(small[None], grid[None].to(small.device), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[0]


class FullSizeOutputs:
    """Preallocated full-size outputs (labels, confidence, optionally probabilities), filled block by block."""

    def __init__(self, height: int, width: int, keep_probs: bool, probs_dtype: torch.dtype) -> None:
        self.height, self.width = height, width
        self.keep_probs, self.probs_dtype = keep_probs, probs_dtype
        self.labels = np.empty((height, width), dtype=np.uint8)
        self.confidence = np.empty((height, width), dtype=np.float32)
        self.probs: np.ndarray | None = None

    def write(self, y0: int, block: torch.Tensor, x0: int = 0) -> None:
        """Store probabilities `block` (C×n×m, float32) at rows `y0..y0+n`, columns `x0..x0+m`."""
        n, m = block.shape[1:]
        if block.shape[0] > 256:
            raise PredictionError(f"the model has {block.shape[0]} classes; uint8 label maps hold at most 256")
        conf, idx = block.max(dim=0)
        self.labels[y0 : y0 + n, x0 : x0 + m] = idx.to(torch.uint8).cpu().numpy()
        self.confidence[y0 : y0 + n, x0 : x0 + m] = conf.cpu().numpy()
        if self.keep_probs:
            values = block.to(self.probs_dtype).cpu()
            if self.probs is None and (n, m) == (self.height, self.width):  # whole image: adopt, no copy
                self.probs = values.numpy() if values.is_contiguous() else values.contiguous().numpy()
                return
            if self.probs is None:
                dtype = np.float16 if self.probs_dtype == torch.float16 else np.float32
                self.probs = np.empty((block.shape[0], self.height, self.width), dtype=dtype)
            self.probs[:, y0 : y0 + n, x0 : x0 + m] = values.numpy()

    def result(self) -> Prediction:
        return Prediction(self.probs, self.labels, self.confidence)


def stitch_tiles(image: np.ndarray, tile_probs: Callable[[np.ndarray], torch.Tensor], out: FullSizeOutputs, *,
                 tile_size: int, overlap: int, check: Callable[[], None],
                 progress: Callable[[int, int], None] | None = None) -> Prediction:
    """Fill ``out`` with ``tile_probs(tile)`` (C×h×w float32 probabilities) of overlapping tiles of
    ``image`` (``ml.tiling``'s grid), cross-faded in the middle of each overlap.

    ``check()`` runs before every tile (it raises to cancel); ``progress(done, total)`` after each.
    """
    height, width = image.shape[:2]
    th, tw, ys, xs = tile_grid(height, width, tile_size, overlap)
    check()
    if len(ys) == 1 and len(xs) == 1:
        out.write(0, tile_probs(image))
        if progress is not None:
            progress(1, 1)
        return out.result()
    # Tiles run row band by row band, left to right, weighted so that all weights add to 1.
    # A block is written out as soon as no later tile has weight there; only the cross-fade
    # zones wait: `pending` (C×th×k, this tile's share of the next tile's first columns) and
    # `carry` (C×r×W, the previous band's share of this band's first rows).
    wys = blend_weights(height, th, ys, overlap)
    wxs = blend_weights(width, tw, xs, overlap)
    ysup, xsup = [support(w) for w in wys], [support(w) for w in wxs]
    carry: torch.Tensor | None = None
    for i, y0 in enumerate(ys):
        r0, r1 = ysup[i]  # rows with weight; rows r0..rf are final after this band
        rf = ys[i + 1] + ysup[i + 1][0] - y0 if i + 1 < len(ys) else r1
        new_carry: torch.Tensor | None = None
        pending: torch.Tensor | None = None
        for j, x0 in enumerate(xs):
            check()
            c0, c1 = xsup[j]
            cf = xs[j + 1] + xsup[j + 1][0] - x0 if j + 1 < len(xs) else c1
            probs = tile_probs(image[y0 : y0 + th, x0 : x0 + tw])
            weight = torch.from_numpy(np.outer(wys[i][r0:r1], wxs[j][c0:c1])).to(probs.device)
            part = probs[:, r0:r1, c0:c1].mul_(weight).cpu()
            if pending is not None:
                part[:, :, : pending.shape[2]] += pending
            pending = part[:, :, cf - c0 :].clone()
            block = part[:, :, : cf - c0]
            if carry is not None:
                block[:, : carry.shape[1]] += carry[:, :, x0 + c0 : x0 + cf]
            if rf > r0 and cf > c0:
                out.write(y0 + r0, block[:, : rf - r0], x0 + c0)
            if rf < r1:
                if new_carry is None:
                    new_carry = torch.empty(part.shape[0], r1 - rf, width)
                new_carry[:, :, x0 + c0 : x0 + cf] = block[:, rf - r0 :]
            if progress is not None:
                progress(i * len(xs) + j + 1, len(ys) * len(xs))
        carry = new_carry
    return out.result()
