"""Samplers from noise (t = 1) to data (t = 0) for every schedule, and the fixed-seed noise API.

Teacher and student are always compared on the same noise: `fixed_noise(n, shape, seed)`
draws from its own generator, untouched by training randomness. Samplers start from
x_1 = sigma(1) * noise and walk a uniform grid in t (for `edm` that grid is the Karras rho = 7
grid). Stochastic samplers (DDIM with eta > 0, multistep consistency) draw their fresh noise
from a generator seeded with `seed`, so they are reproducible too.

- `euler`, `heun`: the probability-flow ODE dx/dt = v (Karras et al. 2022, Alg. 1).
- `ddim`: Song et al. 2021, Eq. 12, with eta (eta = 0 is the deterministic ODE sampler).
- `dpm++2m`: DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), multistep 2nd order in the data
  prediction, first order on the last step, on a Karras noise-level grid (`karras_grid`).
- `multistep`: denoise to x0, re-noise to the next t with fresh noise (the multistep
  consistency sampler, Song et al. 2023, Alg. 1); the sampler of few-step students.
- `flow-map`: jumps x_s = x_t + (s - t) u(x_t, t, s) of a two-time network's average velocity
  (MeanFlow, Geng et al. 2025, Eq. 3); the sampler of `meanflow` students.
- `arcflow`: each step one evaluation of a policy network, then the analytic integral of its
  momentum-mixture velocity to the next grid time (`momentum_policy.py`); `arcflow` students.

These are written once against the Schedule/Denoiser seam rather than wrapping diffusers'
scheduler classes: a diffusers scheduler owns its own discrete sigma table per class, while
one solver here serves six schedules and students queried at arbitrary t. The DPM-Solver++
update is checked against diffusers' `DPMSolverMultistepScheduler` in the tests, and
exported diffusers students carry a diffusers scheduler config (see `export.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.schedules import Schedule, expand_time

SAMPLER_NAMES: tuple[str, ...] = ("euler", "heun", "ddim", "dpm++2m", "multistep", "flow-map", "arcflow")


def fixed_noise(n: int, shape: tuple[int, ...], seed: int) -> Tensor:
    """Standard normal noise (n, *shape) from a dedicated generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=generator)


def time_grid(steps: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """`steps + 1` uniformly spaced times from 1 (noise) down to 0 (data)."""
    return torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=dtype)


PURE_NOISE_SIGMA = 1e5  # sigma / alpha at t = 1 above this: the schedule ends in pure noise


def karras_grid(schedule: Schedule, steps: int, device: torch.device | None = None,
                dtype: torch.dtype = torch.float32, sigma_min: float = 0.002,
                rho: float = 7.0, pure_noise_sigma_max: float = 10.0) -> Tensor:
    """The grid of "DPM++ 2M Karras": noise levels sigma / alpha spaced as in Karras et al.
    2022 (Eq. 5, rho = 7) from the schedule's own terminal level at t = 1 down to sigma_min,
    mapped to t through the log-SNR, then t = 0 (`steps + 1` times).

    Where the schedule ends in pure noise (alpha(1) = 0: flow, TrigFlow) sigma / alpha is
    infinite at t = 1, so the grid takes t = 1, then `steps - 1` levels from
    `pure_noise_sigma_max` = 10 down: the first step jumps from pure noise to sigma = 10, where
    the x0-prediction of data in [-1, 1] is already the data mean. Elsewhere (VP, EDM) the grid
    starts at the terminal level itself, as diffusers' `use_karras_sigmas` does: a jump there
    would multiply an eps-network's x0 error at t = 1 (1 / alpha(1): ~160 for DDPM) by
    alpha(t_next) / alpha(1) in one step, an error that more steps never remove (measured on a
    trained DDPM eps-network, 8gaussians: capping the start at sigma = 20 leaves an L2 gap of
    0.41 to Heun-200 at 40 steps; starting at the terminal level, 0.03)."""
    if steps == 1:
        return time_grid(1, device, dtype)
    one = torch.ones(1, dtype=torch.float64)
    terminal_sigma = math.exp(-0.5 * float(schedule.log_snr(one)))  # inf where alpha(1) = 0
    pure_noise = terminal_sigma > PURE_NOISE_SIGMA  # cos(pi / 2) is 6e-17, not 0, in float64
    count = steps - 1 if pure_noise else steps
    hi_sigma = pure_noise_sigma_max if pure_noise else terminal_sigma
    i = torch.arange(count, dtype=torch.float64) / max(count - 1, 1)
    hi, lo = hi_sigma ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (hi + i * (lo - hi)) ** rho
    t = schedule.t_of_log_snr(-2 * torch.log(sigmas)).clamp(0.0, 1.0)
    parts = [one, t] if pure_noise else [one, t[1:]]
    grid = torch.cat([*parts, torch.zeros(1, dtype=torch.float64)])
    return grid.to(device=device, dtype=dtype)


class Guide:
    """The denoiser with its condition and guidance scale bound: what a sampler calls."""

    def __init__(self, denoiser: Denoiser, cond: Tensor | None, guidance: float) -> None:
        self.denoiser, self.cond, self.guidance = denoiser, cond, guidance
        self.schedule = denoiser.schedule

    def __call__(self, x: Tensor, t: Tensor, kind: str) -> Tensor:
        return self.denoiser.predict(x, t.expand(x.shape[0]).to(x.dtype), kind, self.cond, self.guidance)


def _scalar(schedule_fn: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
    return schedule_fn(t.reshape(1))[0]


def euler(model: Guide, x: Tensor, times: Tensor, generator: torch.Generator) -> Tensor:
    """NFE = steps."""
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        x = x + (t_next - t) * model(x, t, "velocity")
    return x


def heun(model: Guide, x: Tensor, times: Tensor, generator: torch.Generator) -> Tensor:
    """NFE = 2 * steps - 1: the last step, into t = 0 where x0 and eps predictions give no
    velocity (sigma = 0), is an Euler step, as in Karras et al. 2022, Alg. 1."""
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        v = model(x, t, "velocity")
        x_euler = x + (t_next - t) * v
        if t_next > 0:
            x = x + (t_next - t) * 0.5 * (v + model(x_euler, t_next, "velocity"))
        else:
            x = x_euler
    return x


def ddim(model: Guide, x: Tensor, times: Tensor, generator: torch.Generator, eta: float = 0.0) -> Tensor:
    """x_s = alpha_s x0 + sqrt(sigma_s² - c²) eps + c z, c = eta sigma_s sqrt(1 - SNR_t / SNR_s)
    (DDIM Eq. 12 and 16, written for any alpha/sigma)."""
    s = model.schedule
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        x0 = model(x, t, "x0")
        eps = s.to_x0_eps(x, t.expand(x.shape[0]).to(x.dtype), x0, "x0")[1]
        a_n, s_n = _scalar(s.alpha, t_next), _scalar(s.sigma, t_next)
        if t_next == 0 or eta == 0:
            x = a_n * x0 + s_n * eps
            continue
        snr_ratio = (_scalar(s.log_snr, t) - _scalar(s.log_snr, t_next)).exp()
        c = eta * s_n * (1 - snr_ratio).clamp(min=0).sqrt()
        x = a_n * x0 + (s_n**2 - c**2).clamp(min=0).sqrt() * eps
        x = x + c * torch.randn(x.shape, generator=generator).to(x)
    return x


def dpm_solver_pp_2m(model: Guide, x: Tensor, times: Tensor, generator: torch.Generator) -> Tensor:
    """DPM-Solver++(2M), Lu et al. 2022 Alg. 2, with lambda = log(alpha / sigma):
    x_s = (sigma_s / sigma_t) x - alpha_s (exp(-h) - 1) D, h = lambda_s - lambda_t, and
    D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev, r = h_prev / h. D = x0_t on the first step and on
    the last, into t = 0 (diffusers' `lower_order_final`): there lambda is (nearly) infinite
    and the 2nd-order extrapolation would blow up."""
    s = model.schedule
    x0_prev, h_prev = None, None
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        x0 = model(x, t, "x0")
        a_n, s_n, s_t = _scalar(s.alpha, t_next), _scalar(s.sigma, t_next), _scalar(s.sigma, t)
        if t_next <= 0:  # lambda = +inf: the exact first-order step lands on the data prediction
            return a_n * x0 if s_n <= 0 else a_n * x0 + s_n / s_t * (x - _scalar(s.alpha, t) * x0)
        lam_t = 0.5 * _scalar(s.log_snr, t)
        lam_n = 0.5 * _scalar(s.log_snr, t_next)
        h = lam_n - lam_t
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
        x = (s_n / s_t) * x - a_n * torch.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


def multistep(model: Guide, x: Tensor, times: Tensor, generator: torch.Generator) -> Tensor:
    """Denoise to x0 at each t, then re-noise to the next t with fresh noise (NFE = steps)."""
    s = model.schedule
    x0 = x
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        x0 = model(x, t, "x0")
        if t_next > 0:
            z = torch.randn(x.shape, generator=generator).to(x)
            x = _scalar(s.alpha, t_next) * x0 + _scalar(s.sigma, t_next) * z
    return x0


def flow_map(model: Guide, x: Tensor, times: Tensor, generator: torch.Generator) -> Tensor:
    """x_s = x_t + (s - t) u(x_t, t, s) between grid times (NFE = steps); no guidance (a
    flow-map student learns its teacher's guided flow)."""
    denoiser = model.denoiser
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        tt, ss = t.expand(x.shape[0]).to(x.dtype), t_next.expand(x.shape[0]).to(x.dtype)
        x = x + (t_next - t) * denoiser.average_velocity(x, tt, ss, model.cond)
    return x


def arcflow(model: Guide, x: Tensor, times: Tensor, generator: torch.Generator) -> Tensor:
    """x_next = the policy of (x, t) integrated exactly from t to t_next (NFE = steps); no
    guidance (an arcflow student learns its teacher's guided flow)."""
    denoiser = model.denoiser
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        tt, ss = t.expand(x.shape[0]).to(x.dtype), t_next.expand(x.shape[0]).to(x.dtype)
        x = denoiser.policy(x, tt, model.cond).advance(x, tt, ss)
    return x


def ddim_step(denoiser: Denoiser, x_t: Tensor, t: Tensor, t_next: Tensor, labels: Tensor | None = None,
              guidance: float = 1.0, eta: float = 0.0) -> Tensor:
    """One DDIM step (Song et al. 2021, Eq. 12 and 16) from t to t_next, both (B,) with t > 0:
    alpha_n x0^ + sqrt(sigma_n² - c²) eps^ + c z, c = eta sigma_n sqrt(1 - SNR_t / SNR_n), from
    the denoiser's x0 prediction; eta = 0 is the deterministic step, which lands on x0^ at
    t_next = 0. Training-time companion of the `ddim` sampler (per-row times, global RNG)."""
    schedule = denoiser.schedule
    x0 = denoiser.x0(x_t, t, labels, guidance)
    _, eps = schedule.to_x0_eps(x_t, t, x0, "x0")
    if eta == 0:
        return schedule.add_noise(x0, eps, t_next)
    sigma_n = expand_time(schedule.sigma(t_next), x_t)
    snr_ratio = torch.exp(schedule.log_snr(t) - schedule.log_snr(t_next.clamp(min=1e-4)))
    c = eta * sigma_n * (1 - expand_time(snr_ratio, x_t)).clamp(min=0).sqrt()
    return (expand_time(schedule.alpha(t_next), x_t) * x0 + (sigma_n**2 - c**2).clamp(min=0).sqrt() * eps
            + c * torch.randn_like(x_t))


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler": euler, "heun": heun, "ddim": ddim, "dpm++2m": dpm_solver_pp_2m, "multistep": multistep,
    "flow-map": flow_map, "arcflow": arcflow,
}


def nfe_of(sampler: str, steps: int) -> int:
    """Network evaluations a sampler makes for `steps` steps (without guidance, which doubles
    the batch but not the count of sequential evaluations)."""
    return 2 * steps - 1 if sampler == "heun" else steps


def sample(denoiser: Denoiser, noise: Tensor, steps: int, sampler: str = "euler",
           cond: Tensor | None = None, guidance: float = 1.0, eta: float = 0.0,
           seed: int = 0) -> Tensor:
    """Run `sampler` for `steps` steps from standard normal `noise` (B, ...); gradients flow
    if the caller has grad enabled. cond: (B,) class labels or None; guidance: CFG scale."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; available: {', '.join(SAMPLERS)}")
    if steps < 1:
        raise ValueError(f"a sampler needs at least one step, got {steps}")
    model = Guide(denoiser, cond, guidance)
    dtype = torch.float64 if noise.dtype == torch.float64 else torch.float32
    if sampler == "dpm++2m":
        times = karras_grid(denoiser.schedule, steps, noise.device, dtype)
    else:
        times = time_grid(steps, noise.device, dtype)
    generator = torch.Generator().manual_seed(seed)
    x = denoiser.schedule.prior_scale() * noise
    if sampler == "ddim":
        return ddim(model, x, times, generator, eta=eta)
    return SAMPLERS[sampler](model, x, times, generator)
