"""Resumable mini-batches from an in-memory tensor, sharded across processes.

Small data sets (points, features, cached teacher pairs) live in memory; indexing a tensor
is far faster than a DataLoader collating single items. The order is a seeded permutation
per epoch, so the position (epoch, index) is all a checkpoint needs to resume exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor


class BatchStream:
    """Yields this process's share of each global batch of `batch_size` rows.

    Every process draws the same permutation (same seed); process `rank` of `world` takes
    rows rank, rank + world, ... of the global batch. The last incomplete batch of an epoch
    is dropped.
    """

    def __init__(self, rows: Tensor, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if batch_size > len(rows):
            raise ValueError(f"batch_size {batch_size} is larger than the {len(rows)} rows available")
        self.rows, self.batch_size, self.seed = rows, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.index = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.rows), generator=generator)

    def next(self) -> Tensor:
        if self.index + self.batch_size > len(self.rows):
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._permutation()
        picked = self._order[self.index : self.index + self.batch_size]
        self.index += self.batch_size
        return self.rows[picked[self.rank :: self.world]]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation()
