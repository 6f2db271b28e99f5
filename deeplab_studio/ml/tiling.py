"""Tile geometry for large images: overlapping tile positions and blending weights.

Pure numpy. Tiles of one size cover the image with at least the requested overlap; neighbouring
tiles cross-fade linearly in the middle of their overlap, so blended probabilities change
smoothly at seams. The weights are normalised up front, so tiles blend by plain addition.
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


def blend_weights(length: int, tile: int, starts: list[int], ramp: int) -> list[np.ndarray]:
    """Per tile along one axis, blending weights (float32, `tile` long) that add to 1 everywhere.

    At each seam the two tiles cross-fade linearly over a zone of `ramp` samples centred in
    their overlap; before the zone the earlier tile has weight 1, after it the later one, so
    predictions near a tile's edge, where it sees least context, are not used. Tile weights in
    2-D are outer products of these; since the tile grid is a product of the two axes, the 2-D
    weights of all tiles add to exactly 1 at every pixel too.
    """
    weights = [np.ones(tile, dtype=np.float64) for _ in starts]
    for k in range(1, len(starts)):
        prev_start, start = starts[k - 1], starts[k]
        overlap = prev_start + tile - start
        r = max(0, min(ramp, overlap))
        zone = start + (overlap - r) // 2  # global start of the cross-fade
        rise = np.arange(1, r + 1, dtype=np.float64) / (r + 1)
        a, b = zone - start, zone - prev_start  # zone start in tile k and in tile k-1
        weights[k][:a] = 0.0
        weights[k][a : a + r] = np.minimum(weights[k][a : a + r], rise)
        weights[k - 1][b : b + r] = np.minimum(weights[k - 1][b : b + r], 1.0 - rise)
        weights[k - 1][b + r :] = 0.0
    total = np.zeros(length, dtype=np.float64)
    for s, w in zip(starts, weights):
        total[s : s + tile] += w
    if (total <= 0).any():
        raise ValueError(f"tiles {starts} of {tile} leave parts of 0..{length} without weight")
    return [(w / total[s : s + tile]).astype(np.float32) for s, w in zip(starts, weights)]


def support(weights: np.ndarray) -> tuple[int, int]:
    """(first, last + 1) index where `weights` is non-zero."""
    nz = np.flatnonzero(weights)
    return int(nz[0]), int(nz[-1]) + 1


def tile_grid(height: int, width: int, tile: int, overlap: int) -> tuple[int, int, list[int], list[int]]:
    """(tile height, tile width, row starts, column starts) for an image of `height`×`width`."""
    th, tw = min(tile, height), min(tile, width)
    return th, tw, tile_starts(height, th, overlap), tile_starts(width, tw, overlap)
