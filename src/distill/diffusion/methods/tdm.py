"""`tdm`: trajectory distribution matching. A K-step student's intermediate states are
matched to the teacher's marginals at the same times, each step only on its own time
interval, data-free."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.distribution_matching import (
    DMD2,
    DMD2Config,
    distribution_matching_loss,
)
from distill.diffusion.schedules import expand_time, flow_transition
from distill.errors import ConfigError
from distill.registry import METHODS


class TDMConfig(DMD2Config):
    name: Literal["tdm"] = "tdm"  # type: ignore[assignment]
    student_steps: int = Field(4, ge=2, description="K: the student's sampling steps (uniform grid)")
    fake_updates: int = Field(1, ge=1, description="fake-score updates per generator update (1 in TDM)")
    intervals: Literal["disjoint", "reverse"] = Field("disjoint", description=(
        "the noise times of step k's score comparison: disjoint: (t_{k+1}, t_k), each time "
        "belonging to one step (the paper's default); reverse: (t_{k+1}, t_max), where the one "
        "fake score (not conditioned on the step) fits a mixture over the steps sharing a time"))
    max_snr_weight: float = Field(5.0, gt=0, description="the fake score's loss weight min(SNR(tau), this)")
    importance_weight: bool = Field(True, description=(
        "weight the fake score's x0 regression by q_gauss(m) / q_gauss(z) (clipped to [1/20, 20]), "
        "correcting for the student's own noise inside x_tau"))

    @model_validator(mode="after")
    def _no_gan(self) -> TDMConfig:
        if self.gan_weight:
            raise ValueError("tdm has no GAN head: set gan_weight: 0")
        if 1 - 1 / self.student_steps >= self.t_max:
            raise ValueError(f"the first of {self.student_steps} steps ends at t = {1 - 1 / self.student_steps:.3f}, "
                             f"above t_max ({self.t_max}): its comparison interval is empty; use fewer "
                             "steps or a larger t_max")
        return self


def trajectory_noise(x_s_noise: Tensor, s: Tensor, tau: Tensor, z: Tensor) -> Tensor:
    """m with x_tau = (1 - tau) x0 + tau m, for x_s = (1 - s) x0 + s eps_student diffused to tau
    with fresh z (flow schedule, TDM Sec. 3.2): m = (alpha_{tau|s} s eps_student + sigma_{tau|s} z) / tau,
    alpha_{tau|s} = (1 - tau) / (1 - s), sigma_{tau|s}² = tau² - alpha_{tau|s}² s²."""
    ratio, sigma = flow_transition(s, tau)
    return (expand_time(ratio * s, z) * x_s_noise + expand_time(sigma, z) * z) / expand_time(tau, z)


@METHODS.register("tdm", summary="trajectory distribution matching: each step of a few-step student matched to the teacher's marginal on its own interval, data-free",
                  paper="Learning Few-Step Diffusion Models by Trajectory Distribution Matching (Luo et al., ICCV 2025)")
class TDM(DMD2):
    """Luo et al. 2025 (TDM). The student (initialised from the teacher) samples in K
    deterministic steps on the uniform grid t_k = 1 - k/K: at x_{t_k} it predicts the velocity
    v, hence x0_k = x - t_k v and eps_k = x + (1 - t_k) v, and moves to
    x_{t_{k+1}} = (1 - t_{k+1}) x0_k + t_{k+1} eps_k (DDIM). Training rolls the student out
    without gradient to a random step k per row and replays that one step with gradient.

    The distribution of the student's state at s = t_{k+1} is matched to the teacher's
    marginal there: x_tau = (1 - tau) x0_k + tau m, the state diffused to tau in (s, t_k)
    (`intervals: disjoint`; each tau belongs to one step, so one fake score serves all
    steps; m = `trajectory_noise`), and x0_k follows DMD's normalised score difference at
    x_tau (teacher with CFG vs fake). The fake score (a teacher copy) regresses x0_k from
    x_tau with weight min(SNR(tau), 5) times the importance weight
    N(m) / N(z) (per-dimension mean in the exponent, clipped to [1/20, 20]), which corrects
    for the student's own noise inside m.

    Implemented: the trajectory rollout and single-step replay, disjoint / reverse
    intervals, the trajectory fake-score objective with SNR and importance weights, CFG on
    the teacher. Not implemented: TDM-unify's conditioning on the step count (the student
    here serves its K steps); the pseudo-Huber form of the generator loss (L2, as `dmd2`).

    Key effect measured (8gaussians recipe, docs/methods.md#tdm, BENCHMARKS.md): 2-step SWD
    0.1003 / 0.1273 at seeds 0 / 1 after 500 trainer steps, against 0.1729 for `dmd2`'s 2-step
    backward simulation after 2000.
    """

    Config = TDMConfig
    cfg: TDMConfig

    def __init__(self, cfg: TDMConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, **kwargs: object) -> None:
        if (student.schedule.name, teacher.schedule.name) != ("flow", "flow"):
            raise ConfigError("tdm's trajectory is written for the flow schedule (x_t = (1 - t) x0 + t eps); "
                              f"the student uses {student.schedule.name}, the teacher {teacher.schedule.name}")
        super().__init__(cfg, student, teacher, data, seed, **kwargs)

    def replay_step(self, n: int, labels: Tensor | None, device: torch.device) -> dict[str, Tensor]:
        """Roll out to a random step k per row (no grad), then replay it: x0_k (with gradient
        when enabled), eps_k (detached), t_k and s = t_{k+1}, each row's own."""
        K = self.cfg.student_steps
        k = torch.randint(0, K, (n,), device=device)
        x = self.student.schedule.prior_scale() * torch.randn(n, *self.shape, device=device)
        with torch.no_grad():
            for i in range(K - 1):
                t, s = torch.full((n,), 1 - i / K, device=device), torch.full((n,), 1 - (i + 1) / K, device=device)
                stepped = x + expand_time(s - t, x) * self.student.velocity(x, t, labels)
                x = torch.where(expand_time(k > i, x), stepped, x)
        t = 1 - k.float() / K
        v = self.student.velocity(x, t, labels)
        x0 = x - expand_time(t, x) * v
        eps = (x + expand_time(1 - t, x) * v).detach()
        return {"x0": x0, "eps": eps, "t": t, "s": (t - 1.0 / K).clamp(min=0)}

    def comparison_times(self, t: Tensor, s: Tensor) -> Tensor:
        """tau in (s, t) (disjoint) or (s, t_max) (reverse), inside [t_min, t_max]."""
        high = torch.clamp(t, max=self.cfg.t_max) if self.cfg.intervals == "disjoint" else torch.full_like(t, self.cfg.t_max)
        low = torch.clamp(s, min=self.cfg.t_min)
        return low + (high - low) * torch.rand_like(t)

    def diffused(self, step: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x_tau, tau, m, z) for a replayed step."""
        tau = self.comparison_times(step["t"], step["s"])
        z = torch.randn_like(step["eps"])
        m = trajectory_noise(step["eps"], step["s"], tau, z)
        x_tau = expand_time(1 - tau, m) * step["x0"] + expand_time(tau, m) * m
        return x_tau, tau, m, z

    def fake_score_losses(self, batch: dict[str, Tensor], n: int, labels: Tensor | None,
                          device: torch.device) -> dict[str, Tensor]:
        with torch.no_grad():
            step = self.replay_step(n, labels, device)
            x_tau, tau, m, z = self.diffused(step)
            snr = ((1 - tau) / tau) ** 2
            weight = snr.clamp(max=self.cfg.max_snr_weight)
            if self.cfg.importance_weight:
                log_ratio = -0.5 * (m.pow(2).flatten(1).mean(1) - z.pow(2).flatten(1).mean(1))
                weight = weight * log_ratio.clamp(-math.log(20), math.log(20)).exp()
        error = (self.fake.x0(x_tau, tau, labels) - step["x0"]).pow(2).flatten(1).mean(1)
        return {"fake_trajectory": (weight * error).mean()}

    def generator_losses(self, batch: dict[str, Tensor], n: int, labels: Tensor | None,
                         device: torch.device) -> dict[str, Tensor]:
        step = self.replay_step(n, labels, device)
        with torch.no_grad():
            x_tau, tau, _, _ = self.diffused({k: v.detach() for k, v in step.items()})
            real_x0 = self.real_x0(x_tau, tau, labels)
            fake_x0 = self.fake.x0(x_tau, tau, labels)
        return {"distribution_matching": distribution_matching_loss(step["x0"], real_x0, fake_x0)}

    def student_sampler(self) -> str:
        return "euler"
