"""A mixture of time experts: K copies of a backbone, expert k serving the k-th of K equal
time intervals from noise to data (Phased DMD's per-phase experts, Fan et al. 2025)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def expert_index(t: Tensor, experts: int) -> Tensor:
    """Expert of each time (B,) -> (B,) long: k serves t in (1 - (k + 1) / K, 1 - k / K], so
    the K-step uniform grid 1, 1 - 1/K, ... visits experts 0, 1, ..., K - 1 in order."""
    return ((1.0 - t) * experts + 1e-4).floor().long().clamp(0, experts - 1)


class TimeExperts(nn.Module):
    """`net(x, t, cond)` routed per sample to `experts[expert_index(t)]`; every expert has
    the backbone's signature and shapes (x: (B, *shape) -> (B, *shape))."""

    def __init__(self, experts: list[nn.Module]) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        index = expert_index(t, len(self.experts))
        first = int(index[0])
        if bool((index == first).all()):  # the common case: one phase per batch
            return self.experts[first](x, t, cond)
        out = torch.empty_like(x)
        for k in index.unique().tolist():
            rows = index == k
            out[rows] = self.experts[k](x[rows], t[rows], None if cond is None else cond[rows])
        return out

    def load_single_state(self, state: dict[str, Tensor]) -> None:
        """Start every expert as the same one-network model (a teacher's weights)."""
        for expert in self.experts:
            expert.load_state_dict(state)
