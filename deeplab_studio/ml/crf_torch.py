"""The dense CRF's mean-field in torch, for a GPU (`refine_torch`).

The same model, band, tiles, unary and candidate labels as the CPU engine (`crf_engine`); the
inference is dense over each tile's labels, as a GPU likes it:

- smoothness: the truncated Gaussian as a separable depthwise convolution over the crop grid
  (zero outside the CRF's pixels), normalised symmetrically;
- appearance: the permutohedral lattice of `crf_lattice` (built on the CPU from the tile's
  pixels; one `CRFSession` per image keeps it), filtered on the device for all labels at once:
  splat with `index_add_`, the d+1 blur passes as gathers, slice as a weighted gather. Unlike
  the CPU engine (each label on the sub-lattice its own pixels touch), every label uses the whole
  lattice; candidate labels enter as impossible (-inf) energies elsewhere.

Agreement with the CPU engine and pydensecrf is measured on the real scenes (tests/ml/
test_crf_torch.py; benchmarks/bench_crf_scenes.py --torch); on CUDA the `index_add_` sums run in
no fixed order, so answers may differ from the CPU's on a few pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deeplab_studio.core.labels import IGNORE

from .crf_engine import LatticeSource, OneShot, Tile, candidates, plan_tiles, unary_energy
from .crf_inputs import check_image, check_labels, check_params, check_probs, check_protect
from .crf_lattice import SubLattice
from .crf_params import Cancel, CRFParams, check_cancel


def refine_torch(image: np.ndarray, probs: np.ndarray | None = None, *, labels: np.ndarray | None = None,
                 protect: np.ndarray | None = None, params: CRFParams | None = None,
                 device: str | torch.device | None = None, lattices: LatticeSource | None = None,
                 cancel: Cancel = None) -> np.ndarray:
    """`ml.crf.refine(image, probs, ...)` when `probs` is given, else `refine_labels(image, labels,
    ...)`, with the mean-field run by torch on `device` (default: CUDA when present, else the CPU).
    `lattices`: a `CRFSession` of this image keeps the lattices between calls."""
    params = check_params(params)
    image = check_image(image)
    shape = image.shape[:2]
    protect = check_protect(protect, shape)
    top = None
    if probs is not None:
        probs, current, top = check_probs(probs, shape)
        if labels is not None:
            current[protect] = check_labels(labels, shape)[protect]
    elif labels is None:
        raise ValueError("refine_torch needs probs or labels")
    else:
        current = check_labels(labels, shape)
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    void = current == IGNORE
    out = current.copy()
    for tile in plan_tiles(current, protect, void, probs, params, top=top):
        check_cancel(cancel)
        best = _tile(image, current, protect, void, probs, params, tile, lattices or OneShot(), dev, cancel)
        crop_out = out[tile.crop]
        crop_out[tile.dst] = np.asarray(tile.labs, dtype=np.uint8)[best[tile.dst[tile.select]]]
    return out


def _tile(image: np.ndarray, current: np.ndarray, protect: np.ndarray, void: np.ndarray, probs: np.ndarray | None,
          params: CRFParams, tile: Tile, lattices: LatticeSource, dev: torch.device, cancel: Cancel) -> np.ndarray:
    crop = tile.crop
    probs_c = None if probs is None else probs[(slice(None),) + crop]
    unary = unary_energy(current[crop], protect[crop], void[crop], probs_c, tile.labs, params)
    points = np.flatnonzero(tile.select)
    energy, candidate = candidates(unary, points, current[crop], protect[crop], probs is not None, tile.labs, params)
    base = torch.from_numpy(np.where(candidate, -energy, -np.inf).astype(np.float32)).to(dev)  # n×P
    pts = torch.from_numpy(points).to(dev)
    terms = []
    if params.gaussian_compat > 0:
        terms.append((float(params.gaussian_compat), _Stencil(tile.select.shape, pts, float(params.gaussian_sxy), dev)))
    if params.bilateral_compat > 0:
        ys, xs = np.divmod(points, tile.select.shape[1])
        ys, xs = ys + tile.origin[0], xs + tile.origin[1]
        scale = (float(params.bilateral_sxy), float(params.bilateral_srgb))
        kernel = lattices.kernel(image, ys, xs, scale, tile.region)
        terms.append((float(params.bilateral_compat), _LatticeFilter(kernel.whole, dev)))
    q = torch.softmax(base, dim=0)
    with torch.no_grad():
        for _ in range(int(params.iterations)):
            check_cancel(cancel)
            e = base.clone()
            for weight, term in terms:
                e += weight * term.message(q)
            q = torch.softmax(e, dim=0)
    return q.argmax(dim=0).cpu().numpy()


class _Stencil:
    """exp(-d²/2σ²) truncated at 3σ over the selected pixels of a crop grid, normalised."""

    def __init__(self, shape: tuple[int, int], points: torch.Tensor, sxy: float, dev: torch.device) -> None:
        radius = max(1, int(np.ceil(3 * sxy)))
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sxy) ** 2).to(dev)
        self.shape, self.points, self.radius, self.taps = shape, points, radius, taps
        self.norm = torch.rsqrt(self._filter(torch.ones(1, points.numel(), device=dev))[0] + 1e-20)

    def _filter(self, values: torch.Tensor) -> torch.Tensor:
        n = values.shape[0]
        grid = torch.zeros(n, self.shape[0] * self.shape[1], device=values.device)
        grid.index_copy_(1, self.points, values)
        grid = grid.view(1, n, *self.shape)
        r = self.radius
        grid = F.conv2d(grid, self.taps.view(1, 1, -1, 1).expand(n, 1, -1, 1), padding=(r, 0), groups=n)
        grid = F.conv2d(grid, self.taps.view(1, 1, 1, -1).expand(n, 1, 1, -1), padding=(0, r), groups=n)
        return torch.index_select(grid.view(n, -1), 1, self.points)

    def message(self, q: torch.Tensor) -> torch.Tensor:
        return self._filter(q * self.norm) * self.norm


class _LatticeFilter:
    """A permutohedral lattice (its CPU arrays) as device tensors; filters n labels at once."""

    def __init__(self, sub: SubLattice, dev: torch.device) -> None:
        n, m = sub.n, sub.m
        d1 = sub.slice.indices.size // max(n, 1)
        self.m = m
        self.offsets = torch.from_numpy(sub.slice.indices.reshape(n, d1).astype(np.int64)).to(dev)
        self.weights = torch.from_numpy(sub.slice.data.reshape(n, d1)).to(dev)
        self.flat_offsets = self.offsets.reshape(-1)
        nb = sub.neighbours  # (d+1)×2×m, m: none -> the zero row m
        self.neighbours = torch.from_numpy(nb.astype(np.int64)).to(dev)
        self.norm = torch.rsqrt(self.filter(torch.ones(1, n, device=dev))[0] + 1e-20)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Σ_j k(i, j) values[:, j] for each label row (values n_labels×P)."""
        k = values.shape[0]
        contrib = (self.weights.T.unsqueeze(-1) * values.T.unsqueeze(0)).reshape(-1, k)  # (d+1)·P × k
        grid = torch.zeros(self.m + 1, k, device=values.device)
        grid.index_add_(0, self.offsets.T.reshape(-1), contrib)
        for lo, hi in self.neighbours:
            blurred = torch.index_select(grid, 0, lo).add_(torch.index_select(grid, 0, hi)).mul_(0.5)
            grid[:-1] += blurred
        picked = torch.index_select(grid, 0, self.flat_offsets).view(*self.offsets.shape, k)
        return (picked * self.weights.unsqueeze(-1)).sum(dim=1).T

    def message(self, q: torch.Tensor) -> torch.Tensor:
        return self.filter(q * self.norm) * self.norm

