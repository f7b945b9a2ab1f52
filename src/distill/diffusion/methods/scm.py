"""Continuous-time consistency distillation (`scm`): sCM's training objective in the TrigFlow
frame, from noised data or, data-free, from states on the teacher's own trajectories (TBCM)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.ladd import AdversarialConfig, build_discriminator
from distill.diffusion.methods.consistency import teacher_trajectory_state
from distill.diffusion.schedules import expand_time
from distill.diffusion.teacher_pairs import prior_noise_rows
from distill.diffusion.trigflow import check_schedule, from_schedule, schedule_time, trig_velocity
from distill.errors import ConfigError
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class ContinuousConsistencyConfig(MethodConfig):
    name: Literal["scm"] = "scm"
    sigma_data: float = Field(0.5, gt=0, description=(
        "σ_d of the TrigFlow frame x = cos θ x0 + sin θ σ_d ε (about the data's standard deviation)"))
    p_mean: float = Field(-1.0, description="P_mean: training times are ln(σ_d tan θ) ~ N(P_mean, P_std²)")
    p_std: float = Field(1.4, gt=0, description="P_std of the time proposal")
    tangent: Literal["jvp", "finite-difference"] = Field("jvp", description=(
        "dF/dθ along the teacher's flow by forward-mode autodiff (torch.func.jvp), or by a central "
        "finite difference for backbones without forward-mode support"))
    fd_step: float = Field(5e-3, gt=0, description="h (in θ) of the finite-difference tangent")
    normalisation: float = Field(0.1, gt=0, description=(
        "c of the tangent normalisation g / (‖g‖ + c), ‖g‖ the root mean square over dimensions"))
    warmup_steps: int = Field(1000, ge=0, description=(
        "H: the tangent's second term is ramped in linearly over the first H steps (0: none)"))
    adaptive_weighting: bool = Field(True, description=(
        "learn the loss weight w(θ) as sCM does (e^w / D ‖·‖² - w); false: a plain mean"))
    guidance: float = Field(1.0, ge=0, description="CFG scale of the teacher's velocity (1: none)")
    prior_weighting: bool = Field(False, description=(
        "multiply each row's squared error by 1 / (σ_d tan θ), as SANA-Sprint's and TBCM's code do"))
    pairs: Literal["data", "trajectory"] = Field("data", description=(
        "data: noised training data (sCD); trajectory: states on the teacher's own ODE paths from "
        "prior noise, never reading the dataset (TBCM)"))
    trajectory_steps: int = Field(8, gt=0, description="teacher Heun steps from the noise to each sampled time")
    prior_samples: int = Field(50000, gt=0, description="noise rows of the trajectory pairs")
    student_steps: list[int] = Field(default_factory=lambda: [1, 2], min_length=1, description=(
        "multistep consistency-sampler steps the student is evaluated and exported at"))
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig, description=(
        "SANA-Sprint's LADD term: a hinge GAN whose discriminator is a head on the frozen "
        "teacher's features (weight 0: off; needs data pairs)"))


class AdaptiveWeight(nn.Module):
    """sCM's learned loss weight w_φ(θ) (Lu & Song 2024, Sec. 4.3): Fourier features of θ
    through a small MLP, last layer zero so that training starts at w = 0."""

    def __init__(self, frequencies: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(frequencies) * math.pi, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * frequencies, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, theta: Tensor) -> Tensor:
        """w: (B,) for θ: (B,)."""
        angles = (theta * (2 / math.pi)).unsqueeze(1) * self.freqs
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=1)).squeeze(1)


def normalised(g: Tensor, c: float) -> Tensor:
    """sCM's tangent normalisation g / (‖g‖ + c) per sample, ‖g‖ the root mean square over
    the non-batch dimensions (so that c means the same at every data size)."""
    rms = g.flatten(1).pow(2).mean(1).sqrt()
    return g / expand_time(rms + c, g)


@METHODS.register("scm", summary="continuous-time consistency distillation (sCM) in the TrigFlow frame; data-free with trajectory pairs (TBCM)",
                  paper="Simplifying, Stabilizing and Scaling Continuous-Time Consistency Models (Lu & Song, 2024); "
                        "SANA-Sprint (Chen et al., 2025); Image-Free Timestep Distillation via Continuous-Time "
                        "Consistency with Trajectory-Sampled Pairs (TBCM, 2025)")
class ContinuousConsistencyDistillation(Method):
    """sCD, Lu & Song 2024, Algorithm 1, with SANA-Sprint's training-free transform of a flow
    teacher into TrigFlow (`distill.diffusion.trigflow`). With x̂ = cos θ x0 + sin θ σ_d ε,
    ln(σ_d tan θ) ~ N(P_mean, P_std²), the teacher's dx̂/dθ and the student's σ_d F_θ in the
    frame, the loss is

        e^{w(θ)} / D ‖F_θ - F_θ⁻ - g‖² - w(θ),
        g = -cos²θ (σ_d F_θ⁻ - dx̂/dθ) - r cos θ sin θ (x̂ + σ_d dF_θ⁻/dθ),

    θ⁻ = stop-gradient(θ) (no EMA), r ramped from 0 to 1 over `warmup_steps` (tangent warmup),
    g divided by (‖g‖ + c) (tangent normalisation), w the learned adaptive weight. g is
    cos θ times the derivative of the consistency function f = cos θ x̂ - sin θ σ_d F along
    the teacher's flow (Eq. 8), so it vanishes at an exact consistency model. The total
    derivative cos θ sin θ dF⁻/dθ is one JVP of the student with tangents
    (cos θ sin θ dx̂/dθ, cos θ sin θ) (`torch.func.jvp`, or a central finite difference).
    f is the student's x0 prediction, so the student samples with the multistep consistency
    sampler; its uniform 2-step grid puts the middle step at θ = atan(1 / σ_d), 1.107 for
    σ_d = 0.5, where sCM uses 1.1.

    `pairs: trajectory` is TBCM's data-free variant: x̂ is the teacher's own ODE state at θ,
    reached by `trajectory_steps` Heun steps from prior noise, and the dataset is never read.

    Implemented: the objective above with JVP or finite-difference tangents, tangent warmup
    and normalisation, adaptive weighting, the log-normal time proposal, the optional prior
    weight 1 / (σ_d tan θ) of SANA-Sprint's and TBCM's code, CFG on the teacher's velocity,
    flow and TrigFlow teachers, trajectory-sampled pairs; sCM's small time-embedding scale
    (Sec. 4.1) as the backbones' `time_scale`, which the toy recipes' teacher and student use.
    `adversarial` adds SANA-Sprint's LADD term (`distill.diffusion.ladd`): the student's
    one-step samples from fresh noise, re-noised, against real data, judged by a head on the
    frozen teacher's features. Not implemented: SANA-Sprint's dense time embedding, sCM's
    other architecture changes (adaptive double normalisation, pixel norm), JVP-friendly flash
    attention, and TBCM's sampling-strategy study.
    """

    Config = ContinuousConsistencyConfig
    cfg: ContinuousConsistencyConfig

    def __init__(self, cfg: ContinuousConsistencyConfig, student: Denoiser, teacher: Denoiser,
                 data: ArrayData, seed: int = 0, **_: object) -> None:
        super().__init__()
        if student.conditional != teacher.conditional:
            raise ConfigError("scm needs teacher and student to be both class-conditional or both not")
        check_schedule(teacher.schedule, cfg.name)
        check_schedule(student.schedule, cfg.name)
        self.cfg, self.student, self.teacher = cfg, student, teacher
        self.weighting = AdaptiveWeight().requires_grad_(cfg.adaptive_weighting)
        self.num_classes = data.num_classes if student.conditional else None
        self._rows = (prior_noise_rows(cfg.prior_samples, data.shape, self.num_classes, seed)
                      if cfg.pairs == "trajectory" else None)
        if cfg.adversarial.weight > 0 and cfg.pairs == "trajectory":
            raise ConfigError("method.adversarial compares the student's samples with real data, which "
                              "pairs: trajectory never reads: use pairs: data or adversarial.weight: 0")
        probe_labels = torch.zeros(2, dtype=torch.long) if self.num_classes else None
        self.discriminator = build_discriminator(cfg.adversarial, teacher, data.shape, probe_labels)

    def param_groups(self) -> list[ParamGroup]:
        params = list(self.student.parameters())
        if self.cfg.adaptive_weighting:
            params += list(self.weighting.parameters())
        groups = [ParamGroup("student", params)]
        if self.discriminator is not None:  # LADD: the head steps after the student, every step
            groups.append(ParamGroup("discriminator", self.discriminator.head.parameters(),
                                     lr=self.cfg.adversarial.lr))
        return groups

    def train_data(self) -> dict[str, Tensor] | None:
        return self._rows

    def student_steps(self) -> list[int]:
        return sorted(set(self.cfg.student_steps))

    def student_sampler(self) -> str:
        return "multistep"

    def sample_theta(self, n: int, device: torch.device) -> Tensor:
        """θ: (n,) with ln(σ_d tan θ) ~ N(P_mean, P_std²)."""
        tau = self.cfg.p_mean + self.cfg.p_std * torch.randn(n, device=device)
        return torch.atan(tau.exp() / self.cfg.sigma_data)

    @torch.no_grad()
    def trajectory_states(self, noise: Tensor, theta: Tensor, labels: Tensor | None) -> Tensor:
        """x̂: (B, ...), the teacher's ODE from prior noise (B, ...) at t = 1 to each row's θ in
        `trajectory_steps` Heun steps, in the TrigFlow frame (TBCM's trajectory-sampled pairs)."""
        schedule, sigma_data = self.teacher.schedule, self.cfg.sigma_data
        end = schedule_time(schedule, theta, sigma_data)
        x = teacher_trajectory_state(self.teacher, noise, end, self.cfg.trajectory_steps, labels, self.cfg.guidance)
        return from_schedule(schedule, x, end, sigma_data)

    def student_tangent(self, x_hat: Tensor, theta: Tensor, dxdt: Tensor,
                        labels: Tensor | None) -> Tensor:
        """cos θ sin θ σ_d dF⁻/dθ along the teacher's flow (no gradient)."""
        sigma_data = self.cfg.sigma_data

        def velocity(x: Tensor, th: Tensor) -> Tensor:
            return trig_velocity(self.student, x, th, sigma_data, labels)

        weight = torch.cos(theta) * torch.sin(theta)
        tangent_x = expand_time(weight, dxdt) * dxdt
        with torch.no_grad():
            if self.cfg.tangent == "jvp":
                try:
                    return torch.func.jvp(velocity, (x_hat, theta), (tangent_x, weight))[1]
                except NotImplementedError as error:  # e.g. CPU flash attention in diffusers UNets
                    raise ConfigError(
                        f"scm's tangent: jvp needs forward-mode autodiff through the student, which "
                        f"this backbone does not support ({str(error).splitlines()[0][:160]}); set "
                        "method.tangent: finite-difference") from error
            h = self.cfg.fd_step
            ahead = velocity(x_hat + h * tangent_x, theta + h * weight)
            behind = velocity(x_hat - h * tangent_x, theta - h * weight)
            return (ahead - behind) / (2 * h)

    def tangent_target(self, x_hat: Tensor, theta: Tensor, labels: Tensor | None,
                       student_velocity: Tensor, ramp: float) -> Tensor:
        """g of Algorithm 1 before normalisation: (B, ...), zero at an exact consistency model."""
        with torch.no_grad():
            dxdt = trig_velocity(self.teacher, x_hat, theta, self.cfg.sigma_data, labels, self.cfg.guidance)
            tangent = self.student_tangent(x_hat, theta, dxdt, labels)
            cos, sin = expand_time(torch.cos(theta), x_hat), expand_time(torch.sin(theta), x_hat)
            return -cos**2 * (student_velocity - dxdt) - ramp * (cos * sin * x_hat + tangent)

    def consistency_output(self, x_hat: Tensor, theta: Tensor, velocity: Tensor) -> Tensor:
        """f = cos θ x̂ - sin θ σ_d F_θ: the student's x0 at (x̂, θ) from its σ_d F_θ (B, ...)."""
        return expand_time(torch.cos(theta), x_hat) * x_hat - expand_time(torch.sin(theta), x_hat) * velocity

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        cfg = self.cfg
        labels = batch.get("y") if self.num_classes else None
        if group == "discriminator":
            return {"discriminator": self.discriminator_loss(batch, labels)}
        if cfg.pairs == "trajectory":
            noise = batch["noise"]
            theta = self.sample_theta(len(noise), noise.device)
            x_hat = self.trajectory_states(noise, theta, labels)
        else:
            x0 = batch["x"]
            theta = self.sample_theta(len(x0), x0.device)
            cos, sin = expand_time(torch.cos(theta), x0), expand_time(torch.sin(theta), x0)
            x_hat = cos * x0 + sin * cfg.sigma_data * torch.randn_like(x0)
        velocity = trig_velocity(self.student, x_hat, theta, cfg.sigma_data, labels)  # σ_d F_θ
        ramp = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        g = normalised(self.tangent_target(x_hat, theta, labels, velocity.detach(), ramp), cfg.normalisation)
        f_theta = velocity / cfg.sigma_data
        error = (f_theta - f_theta.detach() - g).pow(2).flatten(1).mean(1)
        if cfg.prior_weighting:
            error = error / (cfg.sigma_data * torch.tan(theta))
        if cfg.adaptive_weighting:
            w = self.weighting(theta)
            error = w.exp() * error - w
        losses = {"scm": error.mean()}
        if self.discriminator is not None:  # LADD on the student's one-step samples
            losses["adversarial"] = self.discriminator.generator_loss(self.one_step_sample(len(x_hat), labels, x_hat), labels)
        return losses

    def one_step_sample(self, n: int, labels: Tensor | None, like: Tensor) -> Tensor:
        """The student's one-step sample f(σ_d z, π/2) = -σ_d F_θ (n, ...) from fresh noise z,
        differentiable when grad is enabled."""
        theta = torch.full((n,), math.pi / 2, device=like.device)
        x_hat = self.cfg.sigma_data * torch.randn_like(like[:n])
        return self.consistency_output(x_hat, theta, trig_velocity(self.student, x_hat, theta, self.cfg.sigma_data, labels))

    def discriminator_loss(self, batch: dict[str, Tensor], labels: Tensor | None) -> Tensor:
        """LADD's hinge loss of the head: real rows vs the student's one-step samples (no grad
        to the student)."""
        x0 = batch["x"]
        with torch.no_grad():
            fake = self.one_step_sample(len(x0), labels, x0)
        return self.discriminator.discriminator_loss(fake, x0, labels, labels)
