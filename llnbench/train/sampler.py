"""``EpochSampler``: which examples each step trains on, as a resumable (epoch, offset) position."""

from __future__ import annotations

import torch

from llnbench.errors import ConfigError
from llnbench.train.distributed import DistInfo


class EpochSampler:
    """Seeded per-epoch permutations split across ranks; (epoch, offset) is the data position.

    Restoring the position jumps straight to the next batch: consumed batches are never replayed.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int, dist: DistInfo, shuffle=True):
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.rank, self.world = dist.rank, dist.world
        self.batches_per_epoch = (size // self.world) // batch_size
        if self.batches_per_epoch < 1:
            raise ConfigError(
                f"{size} training examples are fewer than one batch ({batch_size} x {self.world} "
                "devices); lower trainer.batch_size or add data"
            )
        self.epoch, self.offset = 0, 0
        self._order: torch.Tensor | None = None

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None:
            if self.shuffle:
                gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
                order = torch.randperm(self.size, generator=gen)
            else:
                order = torch.arange(self.size)
            per_rank = self.size // self.world
            self._order = order[self.rank * per_rank : (self.rank + 1) * per_rank]
        return self._order

    def next(self) -> torch.Tensor:
        if self.offset >= self.batches_per_epoch:
            self.epoch, self.offset, self._order = self.epoch + 1, 0, None
        start = self.offset * self.batch_size
        self.offset += 1
        return self._epoch_order()[start : start + self.batch_size]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.offset, self._order = int(state["epoch"]), int(state["offset"]), None
