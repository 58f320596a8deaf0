"""Batches of images of similar width, so that padding (wasted compute) stays small for long text lines."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[list[int]]):
    """Yields index lists whose images have similar widths.

    In training (``shuffle``) the indices are shuffled, cut into pools of ``pool_batches`` batches,
    sorted by width inside each pool and cut into batches, and the batch order is shuffled: batches
    are near-uniform in width yet differ between epochs. In evaluation the batches are the widths in
    ascending order, which is deterministic and pads least.

    Args:
        widths: width of each dataset item, in dataset order.
        batch_size: indices per batch (the last batch of a pool may be smaller).
        shuffle: reshuffle every epoch (training); otherwise sort all by width.
        pool_batches: batches per sorting pool in training; larger groups widths more tightly but
            makes batches less random.
        seed: seeds the shuffling; epoch ``e`` uses ``seed + e``.
    """

    def __init__(
        self, widths: Sequence[int], batch_size: int, shuffle: bool, pool_batches: int = 50, seed: int = 0
    ) -> None:
        if batch_size < 1 or pool_batches < 1:
            raise ValueError(f"batch_size and pool_batches must be >= 1, got {batch_size} and {pool_batches}")
        self.widths = np.asarray(widths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.pool_batches = pool_batches
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch, so that resuming replays the same batches."""
        self.epoch = epoch

    def _batches(self, order: np.ndarray) -> list[list[int]]:
        """``order`` sorted (stably) by width and cut into batches."""
        ranked = order[np.argsort(self.widths[order], kind="stable")]
        return [ranked[i : i + self.batch_size].tolist() for i in range(0, len(ranked), self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            yield from self._batches(np.arange(len(self.widths)))
            return
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.widths))
        pool = self.batch_size * self.pool_batches
        batches = [batch for i in range(0, len(order), pool) for batch in self._batches(order[i : i + pool])]
        for i in rng.permutation(len(batches)):
            yield batches[i]

    def __len__(self) -> int:
        if not self.shuffle:
            return -(-len(self.widths) // self.batch_size)
        pool = self.batch_size * self.pool_batches
        full, rest = divmod(len(self.widths), pool)
        return full * self.pool_batches + -(-rest // self.batch_size)
