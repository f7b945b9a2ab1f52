"""MLP denoiser backbone for low-dimensional data (toy 2D points, small feature vectors)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from distill.models.base import ModelConfig
from distill.registry import MODELS


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 1000.0) -> Tensor:
    """Transformer-style embedding of t: (B,) in [0, 1] -> (B, dim) (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t[:, None].float() * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class TimeMLP(nn.Module):
    """x: (B, D), t: (B,) -> (B, D). Time enters as a sinusoidal embedding concatenated to x."""

    def __init__(self, dim: int, hidden: int, depth: int, time_dim: int,
                 activation: str = "silu") -> None:
        super().__init__()
        self.time_dim = time_dim
        act = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU}[activation]
        layers: list[nn.Module] = []
        width = dim + time_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), act()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.layers(torch.cat([x, sinusoidal_embedding(t, self.time_dim)], dim=1))


@MODELS.register("mlp", summary="MLP with sinusoidal time embedding, for points and small vectors")
class MLPConfig(ModelConfig):
    name: Literal["mlp"] = "mlp"
    hidden: int = Field(256, gt=0)
    depth: int = Field(4, gt=0)
    time_dim: int = Field(32, gt=0, multiple_of=2)
    activation: Literal["silu", "relu", "gelu"] = "silu"

    def build(self, dim: int) -> nn.Module:
        return TimeMLP(dim, self.hidden, self.depth, self.time_dim, self.activation)
