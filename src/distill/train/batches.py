"""Resumable mini-batches from an in-memory tensor, sharded across processes.

Small data sets (points, features, cached teacher pairs) live in memory; indexing a tensor
is far faster than a DataLoader collating single items. The order is a seeded permutation
per epoch, so the position (epoch, index) is all a checkpoint needs to resume exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

Batch = Tensor | dict[str, Tensor]
"""A batch: one tensor of rows, or named tensors with the same first dimension (e.g. images
"x" and labels "y")."""


def batch_size_of(rows: Batch) -> int:
    return len(next(iter(rows.values()))) if isinstance(rows, dict) else len(rows)


def index_batch(rows: Batch, index: Tensor) -> Batch:
    if isinstance(rows, dict):
        return {k: v[index] for k, v in rows.items()}
    return rows[index]


def split_batch(batch: Batch, parts: int) -> tuple[Batch, ...]:
    """`parts` micro-batches along the first dimension (gradient accumulation)."""
    if isinstance(batch, dict):
        pieces = {k: v.tensor_split(parts) for k, v in batch.items()}
        return tuple({k: pieces[k][i] for k in pieces} for i in range(parts))
    return batch.tensor_split(parts)


def batch_to(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, dict):
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


class BatchStream:
    """Yields this process's share of each global batch of `batch_size` rows.

    Every process draws the same permutation (same seed); process `rank` of `world` takes
    rows rank, rank + world, ... of the global batch. The last incomplete batch of an epoch
    is dropped.
    """

    def __init__(self, rows: Batch, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n = batch_size_of(rows)
        if isinstance(rows, dict) and any(len(v) != self.n for v in rows.values()):
            sizes = {k: len(v) for k, v in rows.items()}
            raise ValueError(f"named rows must have the same length, got {sizes}")
        if batch_size > self.n:
            raise ValueError(f"batch_size {batch_size} is larger than the {self.n} rows available")
        self.rows, self.batch_size, self.seed = rows, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.index = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=generator)

    def next(self) -> Batch:
        if self.index + self.batch_size > self.n:
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._permutation()
        picked = self._order[self.index : self.index + self.batch_size]
        self.index += self.batch_size
        return index_batch(self.rows, picked[self.rank :: self.world])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation()
