"""The TrigFlow frame of sCM (Lu & Song 2024, Sec. 2) for a denoiser trained on another schedule.

TrigFlow writes a noisy sample as x̂ = cos θ x0 + sin θ z, z = σ_d ε, θ ∈ [0, π/2], and its
probability-flow ODE as dx̂/dθ = σ_d F(x̂ / σ_d, θ). SANA-Sprint (Chen et al. 2025, Sec. 3.1)
shows that a flow-matching model needs no retraining to be read in this frame: x̂ and the
flow sample x_s = (1 - s) x0 + s ε are the same point up to scale when their noise-to-signal
ratios agree, σ(s) / α(s) = σ_d tan θ, and then x_s = x̂ sqrt(α(s)² + σ(s)² / σ_d²). The
denoiser's (x0, ε) prediction at (x_s, s) gives dx̂/dθ = -sin θ x0 + σ_d cos θ ε.

The conversion is closed-form and differentiable in θ for the `flow` schedule (SANA-Sprint's
case) and the `trigflow` schedule (sCM's own, with any σ_d), so forward-mode autodiff
(`torch.func.jvp`) goes through it. The consistency function of the frame,
f(x̂, θ) = cos θ x̂ - sin θ σ_d F, is then exactly the denoiser's x0 prediction, so a student
trained in this frame samples with the usual multistep consistency sampler.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.schedules import Schedule, TrigFlowSchedule, expand_time
from distill.errors import ConfigError

SUPPORTED_SCHEDULES: tuple[str, ...] = ("flow", "trigflow")


def unsupported(schedule: Schedule, method: str) -> ConfigError:
    return ConfigError(
        f"method {method!r} reads the model in the TrigFlow frame, which is implemented for the "
        f"{' and '.join(repr(s) for s in SUPPORTED_SCHEDULES)} schedules; this model uses "
        f"{schedule.name!r} (train the teacher with student.schedule: flow)")


def check_schedule(schedule: Schedule, method: str) -> None:
    """A ConfigError unless `schedule` converts to TrigFlow in closed form."""
    if schedule.name not in SUPPORTED_SCHEDULES:
        raise unsupported(schedule, method)


def schedule_time(schedule: Schedule, theta: Tensor, sigma_data: float) -> Tensor:
    """The schedule's time s with σ(s) / α(s) = σ_d tan θ, θ: (B,) in [0, π/2]."""
    sin, cos = torch.sin(theta), torch.cos(theta)
    if schedule.name == "flow":  # s / (1 - s) = σ_d tan θ
        return sigma_data * sin / (cos + sigma_data * sin)
    if isinstance(schedule, TrigFlowSchedule):  # σ_d' tan(π s / 2) = σ_d tan θ
        return 2 / math.pi * torch.atan2(sigma_data * sin, schedule.sigma_data * cos)
    raise unsupported(schedule, "scm")


def to_schedule(schedule: Schedule, x_hat: Tensor, theta: Tensor, sigma_data: float) -> tuple[Tensor, Tensor]:
    """(x_s, s): the TrigFlow point x̂ (B, ...) at θ (B,) on the schedule's own time axis."""
    s = schedule_time(schedule, theta, sigma_data)
    scale = (schedule.alpha(s) ** 2 + (schedule.sigma(s) / sigma_data) ** 2).sqrt()
    return expand_time(scale, x_hat) * x_hat, s


def from_schedule(schedule: Schedule, x_s: Tensor, s: Tensor, sigma_data: float) -> Tensor:
    """x̂: the schedule's point x_s (B, ...) at time s (B,) in the TrigFlow frame."""
    scale = (schedule.alpha(s) ** 2 + (schedule.sigma(s) / sigma_data) ** 2).sqrt()
    return x_s / expand_time(scale, x_s)


def theta_of_time(schedule: Schedule, s: Tensor, sigma_data: float) -> Tensor:
    """θ = atan(σ(s) / (α(s) σ_d)) for schedule times s: (B,)."""
    return torch.atan2(schedule.sigma(s), schedule.alpha(s) * sigma_data)


def trig_velocity(denoiser: Denoiser, x_hat: Tensor, theta: Tensor, sigma_data: float,
                  labels: Tensor | None = None, guidance: float = 1.0) -> Tensor:
    """dx̂/dθ = σ_d F(x̂ / σ_d, θ) of `denoiser` (CFG scale `guidance`) at x̂: (B, ...), θ: (B,)."""
    x_s, s = to_schedule(denoiser.schedule, x_hat, theta, sigma_data)
    output = denoiser.guided(x_s, s, labels, guidance)
    x0, eps = denoiser.schedule.to_x0_eps(x_s, s, output, denoiser.prediction)
    return expand_time(torch.cos(theta), x0) * sigma_data * eps - expand_time(torch.sin(theta), x0) * x0
