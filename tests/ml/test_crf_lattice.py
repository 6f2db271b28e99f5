"""The permutohedral lattice and the smoothness stencil of the fast CRF engine, against pydensecrf
and against the sums they approximate, on a real VOC image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deeplab_studio.ml import crf_lattice
from deeplab_studio.ml.crf_engine import features
from deeplab_studio.ml.crf_lattice import Lattice
from deeplab_studio.ml.crf_meanfield import GaussianStencil


@pytest.fixture(scope="module")
def crop(data_dir) -> np.ndarray:
    """A 96×128 crop of a real VOC image (aeroplane edge and sky)."""
    image = np.asarray(Image.open(data_dir / "voc_real" / "images" / "2007_000033.png").convert("RGB"))
    return np.ascontiguousarray(image[180:276, 150:278])


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.indices(shape)
    return ys.ravel(), xs.ravel()


def _mean_field(unary: np.ndarray, kernels: list[tuple[object, float]], iterations: int) -> np.ndarray:
    """pydensecrf's update with symmetric normalisation: Q ∝ exp(-U + Σ w·D^-½ K D^-½ Q)."""
    def softmax(e: np.ndarray) -> np.ndarray:
        q = np.exp(e - e.max(axis=0))
        return q / q.sum(axis=0)

    norms = [1 / np.sqrt(k.filter(np.ones(k.n, np.float32))) for k, _ in kernels]
    q = softmax(-unary)
    for _ in range(iterations):
        e = -unary.copy()
        for (k, w), norm in zip(kernels, norms):
            e += w * (k.filter(np.ascontiguousarray((q * norm).T)).T * norm)
        q = softmax(e)
    return q


def test_lattice_gives_pydensecrfs_mean_field(crop):
    """The same kernels through our lattice and through pydensecrf's: the same Q (float32 noise)."""
    import pydensecrf.densecrf as dcrf

    ys, xs = _grid(crop.shape[:2])
    rng = np.random.default_rng(0)
    unary = -np.log(rng.dirichlet(np.ones(3), size=ys.size).T.astype(np.float32))
    bilateral, gaussian = features(crop, ys, xs, (20.0, 5.0)), features(crop, ys, xs, 3.0)
    crf = dcrf.DenseCRF(ys.size, 3)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseEnergy(np.ascontiguousarray(gaussian.T), compat=3.0)
    crf.addPairwiseEnergy(np.ascontiguousarray(bilateral.T), compat=4.0)
    theirs = np.asarray(crf.inference(5))
    ours = _mean_field(unary, [(Lattice(gaussian).sub(), 3.0), (Lattice(bilateral).sub(), 4.0)], 5)
    assert np.abs(ours - theirs).max() < 2e-4
    assert (ours.argmax(0) == theirs.argmax(0)).all()
    assert (theirs.argmax(0) != unary.argmin(0)).any()  # the kernels did move labels


def test_a_subset_filters_the_same_in_its_own_lattice_and_in_the_whole_one(crop):
    """The sub-lattice of some points (compact or as a mask over the whole lattice's vertices) is the
    lattice those points alone would build: the same sums."""
    ys, xs = _grid(crop.shape[:2])
    f = features(crop, ys, xs, (20.0, 5.0))
    whole = Lattice(f)
    rng = np.random.default_rng(1)
    values = rng.random(ys.size, dtype=np.float32)
    for keep in (rng.random(ys.size) < 0.3, rng.random(ys.size) < 0.9):  # compact; masked
        points = np.flatnonzero(keep)
        alone = Lattice(f[points]).sub().filter(values[points])
        via_whole = whole.sub(points).filter(values[points])
        via_sub = whole.sub().sub(points).filter(values[points])
        assert np.allclose(alone, via_whole, rtol=1e-5) and np.allclose(alone, via_sub, rtol=1e-5)
    assert whole.sub().sub(np.flatnonzero(rng.random(ys.size) < 0.9)).mask is not None


def test_wide_features_take_the_byte_keys_and_filter_the_same(crop):
    """Kernels far narrower than the feature range (keys too wide for one int64): same sums."""
    ys, xs = _grid(crop.shape[:2])
    f = features(crop, ys, xs, (20.0, 5.0))
    packed = Lattice(f)
    rem0q, rank, _ = crf_lattice._embed(f)
    offsets, neighbours = crf_lattice._vertices_wide(rem0q, rank)
    wide = crf_lattice.SubLattice(neighbours, offsets, packed.weights)
    values = np.random.default_rng(2).random(ys.size, dtype=np.float32)
    assert np.allclose(packed.sub().filter(values), wide.filter(values), rtol=1e-5)
    tiny = features(crop, ys, xs, (0.1, 0.1))  # CRFParams' smallest ranges
    assert Lattice(tiny).m >= ys.size  # every pixel its own vertices: the kernel reaches no neighbour


def test_gaussian_stencil_is_the_exact_truncated_sum():
    shape = (40, 50)
    rng = np.random.default_rng(3)
    select = rng.random(shape) < 0.6
    points = np.flatnonzero(select)
    sxy = 1.3
    stencil = GaussianStencil(shape, points, sxy)
    ys, xs = np.divmod(points, shape[1])
    d2 = (ys[:, None] - ys[None]) ** 2 + (xs[:, None] - xs[None]) ** 2
    near = (np.abs(ys[:, None] - ys[None]) <= np.ceil(3 * sxy)) & (np.abs(xs[:, None] - xs[None]) <= np.ceil(3 * sxy))
    kernel = np.where(near, np.exp(-d2 / (2 * sxy**2)), 0.0)
    assert np.allclose(stencil.norm, 1 / np.sqrt(kernel.sum(axis=1)), rtol=1e-5)
    q = rng.random(points.size).astype(np.float32)
    norm = stencil.norm
    part = stencil.label(np.arange(points.size), np.array([], dtype=np.int64), np.arange(points.size))
    assert np.allclose(part.message(q), norm * (kernel @ (norm * q)), rtol=1e-4, atol=1e-6)
