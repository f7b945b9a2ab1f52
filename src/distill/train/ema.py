"""Exponential moving average of a module's parameters (Polyak averaging)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class EMA:
    """Keeps `shadow`, a frozen copy of `model` whose weights track an EMA of model's.

    decay_t = min(decay, (1 + t) / (10 + t)), the usual warm-up so early averages are not
    dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - decay)
        for ema_b, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict[str, Tensor], updates: int) -> None:
        self.shadow.load_state_dict(state)
        self.updates = updates
