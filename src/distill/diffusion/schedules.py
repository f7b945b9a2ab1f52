"""Noise schedules and conversions between prediction types.

Every schedule writes the noisy sample as x_t = alpha(t) * x0 + sigma(t) * eps for t in
[0, 1] (t = 0 is data, t = 1 is noise) and its velocity as v = dx_t/dt =
alpha'(t) * x0 + sigma'(t) * eps. Given x_t and any one of x0, eps, v or the score
(-eps / sigma), the others follow by solving that 2x2 linear system, so conversions are
written once for all schedules; a schedule only gives alpha, sigma and their derivatives.

Schedules (`name`: paper):
- `flow`: rectified flow / flow matching (Liu et al. 2023; Lipman et al. 2023), alpha = 1 - t,
  sigma = t.
- `vp-linear`: continuous variance-preserving SDE with linear beta(t) (Song et al. 2021,
  Eq. 33), beta in [0.1, 20].
- `vp-cosine`: the cosine schedule of Nichol & Dhariwal 2021 written through its log-SNR,
  logSNR(t) = -2 log tan(pi u / 2), with u spanning logSNR in [-15, 15] so that neither alpha
  nor sigma is exactly zero (Hoogeboom et al. 2023).
- `vp-discrete`: DDPM's 1000 linear betas in [1e-4, 0.02] (Ho et al. 2020), alpha_bar
  interpolated in log space between t_k = k / 1000 (t_0 = 0 is clean data), so a diffusers
  DDPM model's timestep index j sits at t = (j + 1) / 1000.
- `edm`: variance-exploding with Karras et al. 2022 sigmas, alpha = 1,
  sigma(t) = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho for t > 0,
  so a uniform t grid is the Karras rho = 7 grid; sigma(0) is sigma_min = 0.002.
- `trigflow`: TrigFlow (Lu & Song 2024, sCM), x = cos(theta) x0 + sin(theta) sigma_d eps
  with theta = pi t / 2 and sigma_d = 0.5.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Prediction = Literal["velocity", "x0", "eps"]
PREDICTIONS: tuple[str, ...] = ("velocity", "x0", "eps")
QUANTITIES: tuple[str, ...] = ("velocity", "x0", "eps", "score")


def expand_time(t: Tensor, like: Tensor) -> Tensor:
    """Broadcast a per-sample time t: (B,) against x: (B, ...)."""
    return t.reshape(t.shape + (1,) * (like.ndim - t.ndim))


def flow_transition(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """q(x_t | x_s) = N(alpha_{t|s} x_s, sigma_{t|s}²) on the flow schedule (x_t = (1 - t) x0 +
    t eps), s <= t, both (B,): alpha_{t|s} = (1 - t) / (1 - s), sigma_{t|s}² = t² - alpha_{t|s}² s²."""
    ratio = (1 - t) / (1 - s)
    return ratio, (t**2 - (ratio * s) ** 2).clamp(min=1e-12).sqrt()


class Schedule:
    """x_t = alpha(t) x0 + sigma(t) eps. Subclasses give alpha, sigma and their derivatives."""

    name: str = "base"

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def log_snr(self, t: Tensor) -> Tensor:
        """log(alpha² / sigma²), decreasing in t."""
        return 2 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def t_of_log_snr(self, log_snr: Tensor, iterations: int = 60) -> Tensor:
        """The t with log_snr(t) = `log_snr` (bisection; every schedule's log-SNR is monotone).
        Values outside the schedule's range clamp to t = 0 or 1."""
        lo = torch.zeros_like(log_snr, dtype=torch.float64)
        hi = torch.ones_like(log_snr, dtype=torch.float64)
        target = log_snr.double()
        for _ in range(iterations):
            mid = (lo + hi) / 2
            above = self.log_snr(mid) > target
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return ((lo + hi) / 2).to(log_snr.dtype)

    def prior_scale(self) -> float:
        """sigma(1): samplers start from x_1 = sigma(1) * noise (alpha(1) x0 is negligible)."""
        return float(self.sigma(torch.ones(1, dtype=torch.float64)))

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t for x0, eps: (B, ...), t: (B,)."""
        return expand_time(self.alpha(t), x0) * x0 + expand_time(self.sigma(t), x0) * eps

    def velocity_target(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """v = alpha'(t) x0 + sigma'(t) eps."""
        return expand_time(self.d_alpha(t), x0) * x0 + expand_time(self.d_sigma(t), x0) * eps

    def to_x0_eps(self, x_t: Tensor, t: Tensor, output: Tensor, kind: str) -> tuple[Tensor, Tensor]:
        """(x0, eps) implied by `output`, a prediction of type `kind` at (x_t, t)."""
        a, s = expand_time(self.alpha(t), x_t), expand_time(self.sigma(t), x_t)
        if kind == "x0":
            return output, (x_t - a * output) / s
        if kind == "eps":
            return (x_t - s * output) / a, output
        if kind == "score":
            eps = -s * output
            return (x_t - s * eps) / a, eps
        if kind == "velocity":
            da, ds = expand_time(self.d_alpha(t), x_t), expand_time(self.d_sigma(t), x_t)
            det = a * ds - s * da
            return (ds * x_t - s * output) / det, (a * output - da * x_t) / det
        raise ValueError(f"unknown prediction type {kind!r}; use one of {QUANTITIES}")

    def from_x0_eps(self, x0: Tensor, eps: Tensor, t: Tensor, kind: str) -> Tensor:
        """The prediction of type `kind` for a given (x0, eps) at time t."""
        if kind == "x0":
            return x0
        if kind == "eps":
            return eps
        if kind == "score":
            return -eps / expand_time(self.sigma(t), eps)
        if kind == "velocity":
            return self.velocity_target(x0, eps, t)
        raise ValueError(f"unknown prediction type {kind!r}; use one of {QUANTITIES}")

    def convert(self, x_t: Tensor, t: Tensor, output: Tensor, source: str, target: str) -> Tensor:
        """Convert a prediction of type `source` into type `target` at (x_t, t)."""
        if source == target:
            return output
        x0, eps = self.to_x0_eps(x_t, t, output, source)
        return self.from_x0_eps(x0, eps, t, target)


class FlowSchedule(Schedule):
    """Flow matching / rectified flow: x_t = (1 - t) x0 + t eps, v = eps - x0."""

    name = "flow"

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - t

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)


class VPSchedule(Schedule):
    """Variance preserving: sigma = sqrt(1 - alpha²); subclasses give log alpha and its
    derivative, and sigma' = -alpha alpha' / sigma follows."""

    def log_alpha(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(log alpha(t), d/dt log alpha(t))."""
        raise NotImplementedError

    def prior_scale(self) -> float:
        """1: x_1 = alpha(1) x0 + sigma(1) eps has unit variance for unit-variance data."""
        return 1.0

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_alpha(t)[0])

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)[0]))

    def d_alpha(self, t: Tensor) -> Tensor:
        log_a, d_log_a = self.log_alpha(t)
        return torch.exp(log_a) * d_log_a

    def d_sigma(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)


class VPLinearSchedule(VPSchedule):
    """Song et al. 2021 VP-SDE: log alpha(t) = -t² (b1 - b0) / 4 - t b0 / 2."""

    name = "vp-linear"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.b0, self.b1 = beta_min, beta_max

    def log_alpha(self, t: Tensor) -> tuple[Tensor, Tensor]:
        # t = 0 would give sigma = 0 exactly; the SDE's own t_min = 1e-5 keeps eps defined.
        t = t.clamp(min=1e-5)
        return (-0.25 * t**2 * (self.b1 - self.b0) - 0.5 * t * self.b0,
                -0.5 * t * (self.b1 - self.b0) - 0.5 * self.b0)


class VPCosineSchedule(VPSchedule):
    """Nichol & Dhariwal 2021 cosine schedule: alpha² = sigmoid(logSNR), logSNR(t) =
    -2 log tan(pi u / 2), u = u_min + t (u_max - u_min) spanning logSNR in [-15, 15]."""

    name = "vp-cosine"

    def __init__(self, log_snr_min: float = -15.0, log_snr_max: float = 15.0) -> None:
        self.u_min = 2 / math.pi * math.atan(math.exp(-0.5 * log_snr_max))
        self.u_max = 2 / math.pi * math.atan(math.exp(-0.5 * log_snr_min))

    def log_snr(self, t: Tensor) -> Tensor:
        u = self.u_min + t * (self.u_max - self.u_min)
        return -2 * torch.log(torch.tan(math.pi * u / 2))

    def log_alpha(self, t: Tensor) -> tuple[Tensor, Tensor]:
        u = self.u_min + t * (self.u_max - self.u_min)
        lam = -2 * torch.log(torch.tan(math.pi * u / 2))
        # d lambda / dt = -2 * (pi/2) / (sin cos) * du/dt = -2 pi / sin(pi u) * du/dt
        d_lam = -2 * math.pi / torch.sin(math.pi * u) * (self.u_max - self.u_min)
        log_a = 0.5 * torch.nn.functional.logsigmoid(lam)
        return log_a, 0.5 * torch.sigmoid(-lam) * d_lam


class VPDiscreteSchedule(VPSchedule):
    """DDPM (Ho et al. 2020): alpha_bar_k = prod_{i<=k} (1 - beta_i), betas linear in
    [beta_start, beta_end] over `steps` steps; alpha(t)² is alpha_bar interpolated in log
    space, with t_k = k / steps for k = 1..steps and alpha(0) = 1."""

    name = "vp-discrete"

    def __init__(self, steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        log_alpha_bar = torch.cumsum(torch.log1p(-betas), 0)
        self.steps = steps
        self.knots = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * log_alpha_bar])

    def log_alpha(self, t: Tensor) -> tuple[Tensor, Tensor]:
        knots = self.knots.to(device=t.device, dtype=t.dtype)
        position = t.clamp(1e-6, 1.0) * self.steps
        k = position.floor().clamp(max=self.steps - 1).long()
        left, right = knots[k], knots[k + 1]
        slope = right - left
        return left + (position - k) * slope, slope * self.steps


class EDMSchedule(Schedule):
    """Variance exploding with Karras et al. 2022 sigmas (Eq. 5, rho = 7): alpha = 1."""

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> None:
        self.rho = rho
        self.lo, self.hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return (self.lo + t * (self.hi - self.lo)) ** self.rho

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return self.rho * (self.hi - self.lo) * (self.lo + t * (self.hi - self.lo)) ** (self.rho - 1)


class TrigFlowSchedule(Schedule):
    """TrigFlow (Lu & Song 2024, Eq. 4): x = cos(theta) x0 + sin(theta) sigma_d eps,
    theta = pi t / 2. Its velocity d x / d t is (pi / 2) times sCM's d x / d theta."""

    name = "trigflow"

    def __init__(self, sigma_data: float = 0.5) -> None:
        self.sigma_data = sigma_data

    def alpha(self, t: Tensor) -> Tensor:
        # cos(pi / 2) is -4e-8 in float32: clamp so that alpha(1) = 0 exactly, never negative
        return torch.cos(math.pi / 2 * t).clamp(min=0)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_data * torch.sin(math.pi / 2 * t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return -math.pi / 2 * torch.sin(math.pi / 2 * t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return self.sigma_data * math.pi / 2 * torch.cos(math.pi / 2 * t)


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (FlowSchedule, VPLinearSchedule, VPCosineSchedule, VPDiscreteSchedule,
                              EDMSchedule, TrigFlowSchedule)
}
ScheduleName = Literal["flow", "vp-linear", "vp-cosine", "vp-discrete", "edm", "trigflow"]


def make_schedule(name: str) -> Schedule:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; available: {', '.join(SCHEDULES)}")
    return SCHEDULES[name]()
