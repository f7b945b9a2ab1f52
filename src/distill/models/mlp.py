"""MLP denoiser backbone for low-dimensional data (toy 2D points, small flattened images)."""

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
    """x: (B, *shape), t: (B,), cond: (B,) | None -> (B, *shape). x is flattened; time enters
    as a sinusoidal embedding and the class as a learned embedding, concatenated to x."""

    def __init__(self, shape: tuple[int, ...], hidden: int, depth: int, time_dim: int,
                 activation: str = "silu", num_classes: int | None = None) -> None:
        super().__init__()
        self.shape, self.time_dim = tuple(shape), time_dim
        dim = math.prod(shape)
        act = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU}[activation]
        self.class_embedding = nn.Embedding(num_classes + 1, time_dim) if num_classes else None
        layers: list[nn.Module] = []
        width = dim + time_dim * (2 if num_classes else 1)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), act()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        parts = [x.flatten(1), sinusoidal_embedding(t, self.time_dim).to(x.dtype)]
        if self.class_embedding is not None:
            if cond is None:
                raise ValueError("this network is class-conditional: pass class labels")
            parts.append(self.class_embedding(cond).to(x.dtype))
        return self.layers(torch.cat(parts, dim=1)).reshape(x.shape)


@MODELS.register("mlp", summary="MLP with sinusoidal time embedding, for points and small vectors")
class MLPConfig(ModelConfig):
    name: Literal["mlp"] = "mlp"
    hidden: int = Field(256, gt=0)
    depth: int = Field(4, gt=0)
    time_dim: int = Field(32, gt=0, multiple_of=2)
    activation: Literal["silu", "relu", "gelu"] = "silu"

    def build(self, shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
        return TimeMLP(shape, self.hidden, self.depth, self.time_dim, self.activation, num_classes)
