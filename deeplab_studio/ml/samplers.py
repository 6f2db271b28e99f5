"""The training loader's sampler: ``EpochSampler`` hands ``datasets.SegmentationDataset``
``(index, augmentation seed)`` keys, so every epoch is reproducible from ``(seed, epoch)`` no
matter how many workers or data-parallel ranks run, and a resumed run can start mid-epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from .errors import DatasetError


class EpochSampler(Sampler):
    """Yields ``(index, augmentation seed)`` for one epoch: a permutation seeded by (seed, epoch),
    repeated to at least ``min_items`` items, starting at ``start`` (to resume mid-epoch).

    With ``ranks`` > 1 (data-parallel training) every rank builds the same epoch order and takes,
    from each global batch of ``batch · ranks`` consecutive keys, the ``rank``-th slice of ``batch``:
    the ranks' shares are disjoint, and together a step's shares are exactly the keys one process
    with batch ``batch · ranks`` takes at that step, so ``start`` (and a resume state's step and
    epoch) mean the same for any number of ranks. An incomplete last global batch is dropped.
    """

    def __init__(self, n: int, seed: int, *, min_items: int = 0, rank: int = 0, ranks: int = 1,
                 batch: int = 1) -> None:
        if n < 1:
            raise DatasetError("no training images")
        if not 0 <= rank < ranks or batch < 1:
            raise ValueError(f"need 0 <= rank < ranks and batch >= 1, got rank {rank} of {ranks}, batch {batch}")
        self.n, self.seed = n, seed
        self.per_epoch = max(n, min_items)
        self.rank, self.ranks, self.batch = rank, ranks, batch
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The epoch to yield, from key ``start`` of its global order (a multiple of the global batch)."""
        self.epoch, self.start = epoch, start

    def keys(self) -> list[tuple[int, int]]:
        """The whole epoch's keys in their global order (the same on every rank)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        reps = math.ceil(self.per_epoch / self.n)
        order = np.concatenate([rng.permutation(self.n) for _ in range(reps)])[: self.per_epoch]
        seeds = rng.integers(0, 2**31 - 1, self.per_epoch)
        return [(int(i), int(s)) for i, s in zip(order, seeds)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        keys, step = self.keys()[self.start:], self.batch * self.ranks
        if step == 1:
            return iter(keys)
        lo, hi = self.rank * self.batch, (self.rank + 1) * self.batch
        return iter([k for b in range(0, len(keys) - step + 1, step) for k in keys[b + lo : b + hi]])

    def __len__(self) -> int:
        left, step = self.per_epoch - self.start, self.batch * self.ranks
        return left if step == 1 else left // step * self.batch
