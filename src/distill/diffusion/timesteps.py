"""Training-time samplers of the diffusion time t in (0, 1).

- `uniform`: t ~ U(0, 1).
- `logit-normal`: t = sigmoid(m + s n), n ~ N(0, 1) (Esser et al. 2024, SD3, Eq. 19).
- `log-normal`: EDM's ln(sigma) ~ N(P_mean, P_std) with sigma = sigma(t) / alpha(t)
  (Karras et al. 2022, Table 1), mapped to t through the schedule's log-SNR, so it means the
  same noise levels under every schedule.
- `u-shaped`: density proportional to cosh(a (t - 1/2)), a = 4, which puts more mass near
  both ends (Lee et al. 2024, "Improving the Training of Rectified Flows", Sec. 4.1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from distill.diffusion.schedules import Schedule

TimeSampling = Literal["uniform", "logit-normal", "log-normal", "u-shaped"]


class TimeSamplingConfig(BaseModel):
    """How training draws t; `mean`/`std` parametrise logit-normal and log-normal."""

    model_config = ConfigDict(extra="forbid")

    kind: TimeSampling = "uniform"
    mean: float | None = Field(None, description="logit-normal m (0) or log-normal P_mean (-1.2)")
    std: float | None = Field(None, gt=0, description="logit-normal s (1) or log-normal P_std (1.2)")
    u_shape: float = Field(4.0, gt=0, description="a in cosh(a (t - 1/2)) for u-shaped")


def sample_time(n: int, kind: str, schedule: Schedule, device: torch.device | None = None,
                mean: float | None = None, std: float | None = None, u_shape: float = 4.0,
                generator: torch.Generator | None = None) -> Tensor:
    """t: (n,) in (0, 1) drawn by `kind` (see the module docstring)."""
    if kind == "uniform":
        t = torch.rand(n, generator=generator)
    elif kind == "logit-normal":
        t = torch.sigmoid((0.0 if mean is None else mean)
                          + (1.0 if std is None else std) * torch.randn(n, generator=generator))
    elif kind == "log-normal":
        log_sigma = (-1.2 if mean is None else mean) + (1.2 if std is None else std) * \
            torch.randn(n, generator=generator)
        t = schedule.t_of_log_snr(-2 * log_sigma)
    elif kind == "u-shaped":
        u = torch.rand(n, generator=generator)
        half = math.sinh(u_shape / 2)
        t = 0.5 + torch.asinh((2 * u - 1) * half) / u_shape
    else:
        raise ValueError(f"unknown time sampling {kind!r}; use uniform, logit-normal, log-normal or u-shaped")
    return t.clamp(1e-5, 1.0).to(device)


def sample_time_from(cfg: TimeSamplingConfig, n: int, schedule: Schedule,
                     device: torch.device | None = None) -> Tensor:
    """`sample_time` with the options of a config section."""
    return sample_time(n, cfg.kind, schedule, device, cfg.mean, cfg.std, cfg.u_shape)
