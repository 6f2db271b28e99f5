"""The permutohedral lattice (Adams, Baek & Davis 2010) in numpy: Gaussian filtering in d dimensions.

`Lattice(features)` embeds N points (N×d, each feature already divided by its kernel width) in the
lattice: each point splats onto the d+1 vertices of its enclosing simplex with barycentric
weights; the vertices are blurred with [1/2, 1, 1/2] along each of the d+1 lattice directions and
the result is sliced back with the same weights. This is the arithmetic of pydensecrf's
`Permutohedral` (tests/ml/test_crf_lattice.py: the same mean-field answer); the CRF normalises
the kernel, so its constant scale does not matter.

The lattice is built once; `sub(points)` gives the filter over any subset of the points: the
sub-lattice their splats touch, exactly the lattice that the subset alone would build. So one
lattice per image serves every band, label support and CRF call (`crf_session.CRFSession`).
A vertex's coordinates all share one remainder r mod (d+1); it is keyed by r and the quotients
in one int64 (mixed radix), so vertices are found by sorting and its blur neighbours are the
vertex's key plus a constant that depends only on r and the direction.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


class Lattice:
    """A permutohedral lattice over N points (features N×d float, in kernel-width units)."""

    def __init__(self, features: np.ndarray) -> None:
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[0] < 1 or not 1 <= f.shape[1] <= 8:
            raise ValueError(f"features must be N×d with 1 <= d <= 8, got shape {f.shape}")
        self.n, self.d = f.shape
        rem0q, rank, self.weights = _embed(f)
        self.offsets, self.neighbours = _vertices(rem0q, rank)  # int32 N×(d+1); (d+1)×2×M, M: none
        self.m = int(self.neighbours.shape[2])

    @property
    def nbytes(self) -> int:
        """Memory held by the lattice's arrays."""
        return self.offsets.nbytes + self.weights.nbytes + self.neighbours.nbytes

    def sub(self, points: np.ndarray | None = None) -> "SubLattice":
        """The filter over `points` (indices; None: all points), on the vertices they touch."""
        if points is None:
            return SubLattice(self.neighbours, self.offsets, self.weights)
        offsets = np.take(self.offsets, points, axis=0)
        used = np.zeros(self.m + 1, dtype=bool)
        used[offsets.ravel()] = True
        return _compact(self.neighbours, used, offsets, np.take(self.weights, points, axis=0))


class SubLattice:
    """Gaussian filtering of values on n points of a lattice (`filter`): splat onto the m vertices
    they touch, d+1 blur passes and slice, each one sparse matrix product. `sub(rows)` restricts
    it to some of its points (a label's pixels)."""

    def __init__(self, neighbours: np.ndarray, offsets: np.ndarray, weights: np.ndarray,
                 mask: np.ndarray | None = None, blurs: list[sparse.csr_matrix] | None = None) -> None:
        """`neighbours` (d+1)×2×m local vertex ids (m: none), `offsets`/`weights` n×(d+1); `mask`
        and `blurs`: a restriction that shares its parent's vertices and blur (see `sub`)."""
        n, d1 = offsets.shape
        self.n, self.m = n, neighbours.shape[2]
        self.neighbours = neighbours
        self.mask = mask  # float32 m: 1 on the vertices these points touch (None: all of them)
        self.blurs = blurs if blurs is not None else _blur_matrices(neighbours)
        self.offsets, self.weights = offsets, weights
        self.slice = self.rows(n)
        self.splat = self.slice.T  # CSC: the transpose costs nothing

    def rows(self, k: int) -> sparse.csr_matrix:
        """The slice of the first k points (k×m CSR; its transpose splats them)."""
        d1 = self.offsets.shape[1]
        return sparse.csr_matrix((self.weights[:k].ravel(), self.offsets[:k].ravel(),
                                  np.arange(0, k * d1 + 1, d1, dtype=np.int64)), shape=(k, self.m))

    def sub(self, rows: np.ndarray) -> "SubLattice":
        """The filter over the points `rows` (indices into this one's points), on the vertices they
        touch: the same sums whether built compact or as a mask over these vertices (it is a mask
        when they touch most of them, which saves building a blur)."""
        offsets, weights = np.take(self.offsets, rows, axis=0), np.take(self.weights, rows, axis=0)
        used = np.zeros(self.m + 1, dtype=bool)
        used[offsets.ravel()] = True
        if np.count_nonzero(used) < 0.5 * self.m:
            return _compact(self.neighbours, used, offsets, weights)
        return SubLattice(self.neighbours, offsets, weights, mask=used[:-1].astype(np.float32), blurs=self.blurs)

    def filter(self, values: np.ndarray, *, splat: sparse.spmatrix | None = None,
               slice_: sparse.spmatrix | None = None) -> np.ndarray:
        """Σ_j k(i, j) values[j] for each point i (values: n or n×k float32); k is the lattice's
        approximation of exp(-|f_i - f_j|² / 2) up to a constant factor. `splat` / `slice_`: the
        splat and slice of some of the points only (rows of `self.slice`; values on those)."""
        grid = (self.splat if splat is None else splat) @ values
        mask = self.mask if self.mask is None or grid.ndim == 1 else self.mask[:, None]
        for blur in self.blurs:
            grid = grid + blur @ grid
            if mask is not None:
                grid *= mask
        return (self.slice if slice_ is None else slice_) @ grid


def _compact(neighbours: np.ndarray, used: np.ndarray, offsets: np.ndarray, weights: np.ndarray) -> SubLattice:
    """The sub-lattice of the vertices `used` (bool, one more than there are vertices: "none")."""
    m = int(neighbours.shape[2])
    used[m] = False
    verts = np.flatnonzero(used)
    local = np.full(m + 1, verts.size, dtype=np.int32)  # old id -> new id; the rest -> "none"
    local[verts] = np.arange(verts.size, dtype=np.int32)
    nb = local[np.take(neighbours, verts, axis=2)]
    return SubLattice(nb, local[offsets], weights)


def _blur_matrices(neighbours: np.ndarray) -> list[sparse.csr_matrix]:
    """Per direction, the m×m CSR matrix v -> (v[lo] + v[hi]) / 2 over the neighbours present
    (about 45 % are missing); a blur pass is v + that."""
    d1, _, m = neighbours.shape
    out = []
    for j in range(d1):
        pair = np.ascontiguousarray(neighbours[j].T)  # m×2: lo, hi
        present = pair < m
        indptr = np.zeros(m + 1, dtype=np.int32)
        np.cumsum(present.sum(axis=1, dtype=np.int32), out=indptr[1:])
        cols = pair[present]
        blur = sparse.csr_matrix((m, m), dtype=np.float32)
        blur.data, blur.indices, blur.indptr = np.full(cols.size, 0.5, dtype=np.float32), cols, indptr
        out.append(blur)
    return out


def _embed(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each point's enclosing simplex: the nearest remainder-0 point as quotients ((d+1)×N int32,
    coordinates / (d+1)), the rank of each coordinate's offset from it ((d+1)×N int8, 0 = the
    largest) and the barycentric weights of the simplex's d+1 vertices (N×(d+1) float32).
    Arrays are coordinate-major: d+1 passes over contiguous rows beat N small rows."""
    n, d = f.shape
    d1 = d + 1
    scale = (np.sqrt(2.0 / 3.0) * d1 / np.sqrt((np.arange(d) + 1.0) * (np.arange(d) + 2.0))).astype(np.float32)
    cf = np.ascontiguousarray(f.T) * scale[:, None]
    # elevate onto the hyperplane Σx = 0: e_0 = Σ cf, e_j = Σ_{k>=j} cf_k - j·cf_{j-1}
    elevated = np.zeros((d1, n), dtype=np.float32)
    for j in range(d - 1, -1, -1):
        np.add(elevated[j + 1], cf[j], out=elevated[j])
    for j in range(1, d1):
        elevated[j] -= cf[j - 1] * np.float32(j)
    rem0q = np.rint(elevated * np.float32(1.0 / d1)).astype(np.int32)
    diff = elevated - (rem0q * d1).astype(np.float32)
    # rank: how many coordinates lie further out (ties: the earlier one counts as further)
    rank = np.zeros((d1, n), dtype=np.int8)
    for i in range(d1):
        for j in range(i + 1, d1):
            later_ahead = diff[i] < diff[j]
            rank[i] += later_ahead
            rank[j] += ~later_ahead
    total = rem0q.sum(axis=0, dtype=np.int32).astype(np.int8)  # |Σ rem0 / (d+1)| <= d + 1
    if total.any():  # off the plane: shift the ranks, wrapping around
        for c in range(d1):
            r = rank[c] + total
            low, high = r < 0, r > d
            r[low] += d1
            r[high] -= d1
            rem0q[c] += low.view(np.int8) - high.view(np.int8)
            rank[c] = r
    # barycentric weights (Adams et al., p. 10): differences of the offsets in rank order
    ordered = np.empty((d1 + 1, n), dtype=np.float32)  # row d - rank: the offsets ascending
    flat = ordered.reshape(-1)
    at = np.arange(n, dtype=np.int64)
    scale_back = np.float32(1.0 / d1)
    for c in range(d1):
        offset = (elevated[c] - (rem0q[c] * d1).astype(np.float32)) * scale_back
        flat[(d - rank[c]).astype(np.int64) * n + at] = offset
    ordered[d1] = ordered[0] + 1.0
    bary = np.empty((n, d1), dtype=np.float32)
    bary[:, 1:] = (ordered[1:d1] - ordered[:d]).T
    bary[:, 0] = ordered[d1] - ordered[d]
    return rem0q, rank, bary


def _vertices(rem0q: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lattice vertices the points' simplices touch: (each point's d+1 vertex ids N×(d+1)
    int32, the blur neighbours (d+1)×2×M int32 with M for "none")."""
    d1, n = rank.shape
    d = d1 - 1
    lo = rem0q[:d].min(axis=1).astype(np.int64) - 2  # a blur neighbour may be one quotient further out
    radix = rem0q[:d].max(axis=1).astype(np.int64) + 2 - lo + 1
    if float(np.prod(radix.astype(np.float64))) * d1 * float(d1) ** d * 2.0 ** (n.bit_length() + 1) >= 2.0**63:
        return _vertices_wide(rem0q, rank)
    stride = np.ones(d, dtype=np.int64)
    for c in range(d - 2, -1, -1):
        stride[c] = stride[c + 1] * radix[c + 1]
    stride *= d1
    # points in the same simplex share its vertices: find the simplices first (rem0 and the ranks)
    base = np.zeros(n, dtype=np.int64)
    perm = np.zeros(n, dtype=np.int64)
    for c in range(d):
        base += (rem0q[c] - lo[c]) * stride[c]
        perm += rank[c].astype(np.int64) * d1**c
    simplex, first, inverse = _unique(base * d1**d + perm)
    base, ranks = base[first], rank[:, first]
    # vertex r = rem0 + (r, …, r) - (d+1)·[rank > d - r]: key r + Σ_c (q_c - lo_c)·stride_c
    keys = np.empty((simplex.size, d1), dtype=np.int64)
    for r in range(d1):
        k = base + r
        for c in range(d):
            k -= (ranks[c] > d - r) * stride[c]
        keys[:, r] = k
    uniq, _, vinv = _unique(keys.reshape(-1))
    offsets = vinv.reshape(-1, d1)[inverse]
    # neighbours along direction j: all coordinates -1 (+1) but coordinate j + d (- d)
    full = np.concatenate([stride, [0]])
    steps = np.empty((d1, 2, d1), dtype=np.int64)
    for j in range(d1):
        for side, sign in enumerate((-1, 1)):
            for r in range(d1):
                wrap = -1 if r + sign < 0 else (1 if r + sign > d else 0)  # the remainder wraps around:
                dq = np.full(d1, wrap, dtype=np.int64)  # every quotient moves by `wrap`
                dq[j] = wrap - sign  # and coordinate j moves by ∓d = ±1 ∓ (d+1)
                steps[j, side, r] = sign - d1 * wrap + (dq * full).sum()
    return offsets, _neighbours(uniq, steps)


def _vertices_wide(rem0q: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_vertices` for coordinate ranges too wide for one int64 key (very narrow kernels): each
    vertex is keyed by its coordinate row as bytes (slower, same result)."""
    d1, n = rank.shape
    d = d1 - 1
    rows = np.empty((n, d1, d1), dtype=np.int32)  # per vertex r: the d quotients, then r
    for r in range(d1):
        for c in range(d):
            rows[:, r, c] = rem0q[c] - (rank[c] > d - r)
        rows[:, r, d] = r
    void = np.dtype((np.void, 4 * d1))
    uniq, inverse = np.unique(rows.reshape(-1, d1).view(void).ravel(), return_inverse=True)
    coords = uniq.view(np.int32).reshape(-1, d1)
    out = np.empty((d1, 2, uniq.size), dtype=np.int32)
    for j in range(d1):
        for side, sign in enumerate((-1, 1)):
            r2 = coords[:, d] + sign
            wrap = (r2 > d).astype(np.int32) - (r2 < 0)
            moved = coords.copy()
            moved[:, :d] += wrap[:, None]
            if j < d:
                moved[:, j] -= sign
            moved[:, d] = r2 - d1 * wrap
            key = np.ascontiguousarray(moved).view(void).ravel()
            pos = np.minimum(np.searchsorted(uniq, key), uniq.size - 1)
            out[j, side] = np.where(uniq[pos] == key, pos, uniq.size)
    return inverse.reshape(n, d1).astype(np.int32), out


def _unique(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted unique keys, the position of each one's first occurrence, the int32 index of each
    key among them), sorting (key, position) packed into one int64 when they fit."""
    n = keys.size
    bits = max(1, int(n - 1).bit_length())
    if int(keys.max()) < 2 ** (63 - bits):
        keyed = np.sort((keys << bits) | np.arange(n, dtype=np.int64))
        order, ordered = keyed & ((1 << bits) - 1), keyed >> bits
    else:
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    inverse = np.empty(n, dtype=np.int32)
    inverse[order] = np.cumsum(new, dtype=np.int32) - 1
    return ordered[new], order[new], inverse


def _neighbours(uniq: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """For each direction and side, each vertex's neighbour id (M, the number of vertices: none).
    The vertices of one remainder r step by one constant, so their queries come sorted."""
    d1 = steps.shape[0]
    r = uniq % d1
    out = np.empty((d1, 2, uniq.size), dtype=np.int32)
    classes = [np.flatnonzero(r == k) for k in range(d1)]
    for j in range(d1):
        for side in range(2):
            for k, members in enumerate(classes):
                key = uniq[members] + steps[j, side, k]
                pos = np.minimum(np.searchsorted(uniq, key), uniq.size - 1)
                out[j, side, members] = np.where(uniq[pos] == key, pos, uniq.size)
    return out
