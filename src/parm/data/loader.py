"""A minimal batch iterator over in-memory tensors (no per-sample ``__getitem__``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class EpochShuffle:
    """A seeded permutation that changes every epoch, reproducible from ``(seed, epoch)``.

    Lightning calls ``set_epoch`` on a loader's ``sampler`` at the start of every training epoch (also
    after a resume); without Lightning each pass advances the epoch by one.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def next_permutation(self, n: int) -> torch.Tensor:
        """A permutation of ``range(n)`` for the current epoch; then advances to the next epoch."""
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(2, dtype=np.uint32)
        generator = torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))
        self.epoch += 1
        return torch.randperm(n, generator=generator)


class TensorLoader:
    """Yields ``(x, y, index)`` batches by slicing tensors: far faster than a per-sample DataLoader.

    Args:
        x: ``(N, C, H, W)`` inputs (uint8 images or float features).
        y: ``(N,)`` int64 labels or ``(N, *D)`` float regression targets (boxes), same device as ``x``.
        batch_size: samples per batch.
        shuffle: reshuffle every epoch with :class:`EpochShuffle`; otherwise a fixed order.
        drop_last: drop the trailing partial batch.
        seed: seed of the shuffle.
        rank: this process's rank among ``world_size`` data-parallel processes (DDP).
        world_size: with more than one process each rank gets a disjoint shard: training draws the same
            per-epoch permutation on every rank and keeps every ``world_size``-th sample of it (equal
            counts, so every rank runs the same number of steps); evaluation keeps every
            ``world_size``-th batch (whole coding groups stay together).

    Yields:
        ``x[index]``, ``y[index]`` and ``index`` ``(B,)`` int64: each sample's row in ``x``.
    """

    # Lightning inspects DataLoader-style `sampler`/`batch_sampler` attributes: it calls
    # `sampler.set_epoch(epoch)` every training epoch (also after a resume), which drives the shuffle.
    batch_sampler = None

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}.")
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = EpochShuffle(seed) if shuffle else None
        self.rank, self.world_size = rank, world_size

    def _batches(self) -> int:
        """Batches over all ranks (unsharded eval) or of this rank's shard (shuffled training)."""
        n = len(self.x) // self.world_size if self.sampler is not None else len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        total = self._batches()
        if self.sampler is not None or self.world_size == 1:
            return total
        return len(range(self.rank, total, self.world_size))

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.x)
        device = self.x.device
        if self.sampler is None:
            for start in range(self.rank * self.batch_size, self._batches() * self.batch_size,
                               self.batch_size * self.world_size):
                stop = min(start + self.batch_size, n)
                yield self.x[start:stop], self.y[start:stop], torch.arange(start, stop, device=device)
            return
        order = self.sampler.next_permutation(n).to(device)
        if self.world_size > 1:
            order = order[self.rank::self.world_size][: n // self.world_size]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size]
            yield self.x[index], self.y[index], index
