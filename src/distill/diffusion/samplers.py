"""ODE samplers from noise (t = 1) to data (t = 0), and the fixed-seed noise API.

Teacher and student are always compared on the same noise: `fixed_noise(n, shape, seed)`
draws from its own generator, untouched by training randomness.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from distill.diffusion.denoiser import Denoiser


def fixed_noise(n: int, shape: tuple[int, ...], seed: int) -> Tensor:
    """Standard normal noise (n, *shape) from a dedicated generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=generator)


def time_grid(steps: int, device: torch.device | None = None) -> Tensor:
    """`steps + 1` uniformly spaced times from 1 (noise) down to 0 (data)."""
    return torch.linspace(1.0, 0.0, steps + 1, device=device)


def euler(denoiser: Denoiser, noise: Tensor, steps: int) -> Tensor:
    """Euler ODE solve with `steps` velocity evaluations (NFE = steps). noise: (B, ...)."""
    x = noise
    times = time_grid(steps, noise.device)
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        v = denoiser.velocity(x, t.expand(x.shape[0]))
        x = x + (t_next - t) * v
    return x


def heun(denoiser: Denoiser, noise: Tensor, steps: int) -> Tensor:
    """Heun's 2nd-order solve (Karras et al. 2022, Alg. 1); NFE = 2 * steps. The flow
    velocity is finite at t = 0, so the last step is corrected too (unlike EDM's sigma = 0)."""
    x = noise
    times = time_grid(steps, noise.device)
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        v = denoiser.velocity(x, t.expand(x.shape[0]))
        x_euler = x + (t_next - t) * v
        v_next = denoiser.velocity(x_euler, t_next.expand(x.shape[0]))
        x = x + (t_next - t) * 0.5 * (v + v_next)
    return x


SAMPLERS: dict[str, Callable[[Denoiser, Tensor, int], Tensor]] = {"euler": euler, "heun": heun}


def nfe_of(sampler: str, steps: int) -> int:
    """Network evaluations a sampler makes for `steps` steps."""
    return 2 * steps if sampler == "heun" else steps


def sample(denoiser: Denoiser, noise: Tensor, steps: int, sampler: str = "euler") -> Tensor:
    """Run `sampler` from `noise`; gradients flow if the caller has grad enabled."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; available: {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler](denoiser, noise, steps)
