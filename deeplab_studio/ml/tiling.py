"""Tile geometry for large images: overlapping tile positions and blending weights.

Pure numpy. Tiles of one size cover the image with at least the requested overlap; each tile's
weight ramps linearly from near 0 to 1 across the overlap on every side that borders another tile
(and stays 1 on sides at the image border), so blended probabilities change smoothly at seams.
The weights are normalised up front, so tiles can be blended by plain addition.
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


def normalised_ramps(length: int, tile: int, starts: list[int], ramp: int) -> list[np.ndarray]:
    """Per tile along one axis, ramped weights divided by their sum over all tiles (so they add to 1).

    Tile weights in 2-D are outer products of these; because the tile grid is a product of the
    two axes, the 2-D weights of all tiles also add to exactly 1 at every pixel.
    """
    ramps = [ramp_1d(tile, ramp, lead=s > 0, trail=s + tile < length) for s in starts]
    total = np.zeros(length, dtype=np.float64)
    for s, r in zip(starts, ramps):
        total[s : s + tile] += r
    return [(r / total[s : s + tile]).astype(np.float32) for s, r in zip(starts, ramps)]


def tile_grid(height: int, width: int, tile: int, overlap: int) -> tuple[int, int, list[int], list[int]]:
    """(tile height, tile width, row starts, column starts) for an image of `height`×`width`."""
    th, tw = min(tile, height), min(tile, width)
    return th, tw, tile_starts(height, th, overlap), tile_starts(width, tw, overlap)
