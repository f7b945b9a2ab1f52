"""How straight a model's sampling paths are: the straightness of Liu et al. 2023.

"Flow Straight and Fast" (Liu, Gong & Liu, ICLR 2023, Eq. 4 / Sec. 2.3) measures a flow's
paths by S = ∫_0^1 E ||(X_1 - X_0) - dX_t/dt||² dt: zero exactly when every path is a
straight line walked at constant speed, which a 1-step Euler sampler follows without error.
Reflow (`reflow`, `instaflow`, `slimflow`) exists to make S small.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.samplers import time_grid


@torch.no_grad()
def path_straightness(denoiser: Denoiser, noise: Tensor, steps: int = 64, cond: Tensor | None = None,
                      guidance: float = 1.0) -> float:
    """S estimated on the `steps`-step Euler path from `noise` (B, ...) (t = 1) to data (t = 0),
    per dimension: the mean over samples, steps and dimensions of ((X_1 - X_0) - v_i)².

    On a uniform grid the chord X_1 - X_0 is exactly the mean velocity along the path, so S
    is the variance of the velocity along each path, accumulated without storing the path."""
    x = denoiser.schedule.prior_scale() * noise
    times = time_grid(steps, noise.device, noise.dtype)
    sum_v = torch.zeros_like(x)
    sum_sq = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        v = denoiser.velocity(x, t.expand(len(x)), cond, guidance)
        sum_v += v
        sum_sq += v.pow(2).flatten(1).sum(1)
        x = x + (t_next - t) * v
    mean_v = sum_v / steps
    variance = sum_sq / steps - mean_v.pow(2).flatten(1).sum(1)
    return float(variance.clamp(min=0).mean() / x[0].numel())
