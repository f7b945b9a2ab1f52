"""Resumable mini-batches from an in-memory tensor, sharded across processes.

Small data sets (points, features, cached teacher pairs) live in memory; indexing a tensor
is far faster than a DataLoader collating single items. The order is a seeded permutation
per epoch, so the position (epoch, index) is all a checkpoint needs to resume exactly.
"""

from __future__ import annotations

from typing import Any

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

    With `strata` = (stratum index per row (N,), share of each stratum), every global batch
    holds round(share × batch_size) rows of each stratum, each stratum drawn from its own
    seeded permutation with its own epochs (semi-supervised batches: a fixed share of
    labelled rows, as FixMatch's ratio of labelled to unlabelled batch sizes). The strata's
    rows are interleaved evenly in the batch, so every process and accumulation micro-batch
    gets its share of each.
    """

    def __init__(self, rows: Batch, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 strata: tuple[Tensor, tuple[float, ...]] | None = None) -> None:
        self.n = batch_size_of(rows)
        if isinstance(rows, dict) and any(len(v) != self.n for v in rows.values()):
            sizes = {k: len(v) for k, v in rows.items()}
            raise ValueError(f"named rows must have the same length, got {sizes}")
        if batch_size > self.n:
            raise ValueError(f"batch_size {batch_size} is larger than the {self.n} rows available")
        self.rows, self.batch_size, self.seed = rows, batch_size, seed
        self.rank, self.world = rank, world
        if strata is None:
            self._pools = [_Pool(torch.arange(self.n), batch_size, seed)]
        else:
            stratum, shares = strata
            counts = stratum_counts(shares, batch_size)
            self._pools = []
            for k, count in enumerate(counts):
                members = (stratum == k).nonzero().flatten()
                if count > len(members):
                    raise ValueError(f"stratum {k} has {len(members)} rows, fewer than its "
                                     f"{count} rows per batch")
                # Stratum 0 keeps the unstratified seed; the others get their own.
                self._pools.append(_Pool(members, count, seed + 7919 * k))
            self._arrange = interleaved_order(counts, world)

    def next(self) -> Batch:
        if len(self._pools) == 1:
            picked = self._pools[0].take()
        else:
            picked = torch.cat([pool.take() for pool in self._pools])[self._arrange]
        return index_batch(self.rows, picked[self.rank :: self.world])

    def state_dict(self) -> dict[str, Any]:
        if len(self._pools) == 1:
            return self._pools[0].state_dict()
        return {"strata": [pool.state_dict() for pool in self._pools]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        states = state["strata"] if "strata" in state else [state]
        if len(states) != len(self._pools):
            raise ValueError(f"the checkpoint's batch position has {len(states)} strata, this "
                             f"run {len(self._pools)}: was it made with other batch shares?")
        for pool, pool_state in zip(self._pools, states, strict=True):
            pool.load_state_dict(pool_state)


def stratum_counts(shares: tuple[float, ...], batch_size: int) -> list[int]:
    """Rows per batch of each stratum: round(share × batch_size), at least 1 each, summing to
    batch_size (the largest stratum absorbs the rounding)."""
    if any(s <= 0 for s in shares) or abs(sum(shares) - 1) > 1e-6:
        raise ValueError(f"batch shares must be positive and sum to 1, got {shares}")
    if batch_size < len(shares):
        raise ValueError(f"batch_size {batch_size} is smaller than the {len(shares)} strata")
    counts = [max(1, round(s * batch_size)) for s in shares]
    largest = max(range(len(counts)), key=counts.__getitem__)
    counts[largest] += batch_size - sum(counts)
    return counts


def interleaved_order(counts: list[int], world: int) -> Tensor:
    """A permutation of the concatenated strata draws (counts[k] rows of stratum k, in order)
    such that each process's share (rows rank, rank + world, ...) holds its strata evenly
    spread, so every contiguous accumulation micro-batch of it gets their shares too."""
    stratum = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    total = len(stratum)
    owner = torch.arange(total) % world  # round-robin: every process gets total / world rows
    order = torch.empty(total, dtype=torch.long)
    for rank in range(world):
        mine = (owner == rank).nonzero().flatten()
        keys = torch.empty(len(mine))
        for k in range(len(counts)):
            members = (stratum[mine] == k).nonzero().flatten()
            keys[members] = (torch.arange(len(members)) + 0.5) / max(1, len(members))
        order[rank::world] = mine[torch.argsort(keys, stable=True)]
    return order


class _Pool:
    """Row indices drawn `count` at a time in a seeded permutation per epoch; (epoch, index)
    is the whole position."""

    def __init__(self, members: Tensor, count: int, seed: int) -> None:
        self.members, self.count, self.seed = members, count, seed
        self.epoch, self.index = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return self.members[torch.randperm(len(self.members), generator=generator)]

    def take(self) -> Tensor:
        if self.index + self.count > len(self.members):
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._permutation()
        picked = self._order[self.index : self.index + self.count]
        self.index += self.count
        return picked

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation()
