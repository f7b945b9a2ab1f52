"""The sinusoidal time embedding the MLP backbones share."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 1000.0, scale: float = 1000.0) -> Tensor:
    """Transformer-style embedding of t: (B,) in [0, 1] -> (B, dim) (Vaswani et al. 2017): sines
    and cosines of scale * t at frequencies 1 down to 1 / max_period."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    # float32 at least (a bf16 t would round the angles), float64 kept (exact derivative checks)
    angles = scale * t[:, None].to(torch.promote_types(t.dtype, torch.float32)) * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
