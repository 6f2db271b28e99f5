"""Tile geometry for large images: overlapping tile positions and blending weights.

Pure numpy. Tiles of one size cover the image with at least the requested overlap; each tile's
weight ramps linearly from near 0 to 1 across the overlap on every side that borders another tile
(and stays 1 on sides at the image border), so blended probabilities change smoothly at seams.
"""

from __future__ import annotations

import math

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering `[0, length)` with at least `overlap` shared.

    The tiles are spread evenly, the first at 0 and the last ending exactly at `length`.
    """
    if length <= 0 or tile <= 0:
        raise ValueError(f"length and tile must be positive, got {length} and {tile}")
    if length <= tile:
        return [0]
    overlap = max(0, min(overlap, tile - 1))
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    span = length - tile
    return [round(i * span / (n - 1)) for i in range(n)]


def ramp_1d(size: int, ramp: int, *, lead: bool, trail: bool) -> np.ndarray:
    """Weights (float32, all > 0) rising over `ramp` samples at the leading/trailing side."""
    w = np.ones(size, dtype=np.float32)
    ramp = max(0, min(ramp, size // 2))
    if ramp:
        rise = np.arange(1, ramp + 1, dtype=np.float32) / (ramp + 1)
        if lead:
            w[:ramp] = rise
        if trail:
            w[size - ramp :] = np.minimum(w[size - ramp :], rise[::-1])
    return w


def tile_weight(y0: int, x0: int, th: int, tw: int, height: int, width: int, ramp: int) -> np.ndarray:
    """th×tw blending weight of the tile at (y0, x0) in an image of `height`×`width`."""
    wy = ramp_1d(th, ramp, lead=y0 > 0, trail=y0 + th < height)
    wx = ramp_1d(tw, ramp, lead=x0 > 0, trail=x0 + tw < width)
    return wy[:, None] * wx[None, :]


def tile_grid(height: int, width: int, tile: int, overlap: int) -> tuple[int, int, list[int], list[int]]:
    """(tile height, tile width, row starts, column starts) for an image of `height`×`width`."""
    th, tw = min(tile, height), min(tile, width)
    return th, tw, tile_starts(height, th, overlap), tile_starts(width, tw, overlap)
