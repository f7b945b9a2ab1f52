"""`mdt`: marginal-data transport distillation. The student's velocity at (x_t, t) is the
average velocity of the teacher's flow from t down to 0, learned by velocity matching (the
transport's derivative along the teacher's flow equals the teacher's velocity) and velocity
distillation (a distribution-level term on the student's own one-step samples)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.schedules import expand_time
from distill.diffusion.timesteps import TimeSamplingConfig, sample_time_from
from distill.errors import ConfigError
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class MDTConfig(MethodConfig):
    name: Literal["mdt"] = "mdt"
    student_steps: list[int] = Field(default_factory=lambda: [1, 2], description=(
        "steps the student is evaluated and exported at (on the uniform grid)"))
    sampler: Literal["euler", "multistep"] = Field("euler", description=(
        "euler: the paper's x_s = x_t - (t - s) phi, which carries the first noise along; "
        "multistep: x0 = x_t - t phi re-noised with fresh noise at each step, i.e. at the "
        "independent noisings of x0 that phi is trained on (the same at one step)"))
    delta: float = Field(0.01, gt=0, lt=0.5, description=(
        "the finite-difference step of the transport's derivative along the teacher's flow"))
    solver: Literal["euler", "heun"] = Field("euler", description=(
        "the teacher's step from t to t - delta along which the derivative is taken (the paper: euler)"))
    derivative_form: Literal["product-rule", "difference"] = Field("product-rule", description=(
        "product-rule: the paper's d(t phi)/dt = phi + t dphi/dt with a backward difference for "
        "dphi/dt (its fixed point is off the transport by O(delta)); difference: the backward "
        "difference of t phi itself against the teacher step's mean velocity, whose fixed point "
        "is the transport along the teacher's discrete steps"))
    normalise_derivative: bool = Field(False, description=(
        "divide the derivative by (its per-sample norm + 0.1), as the reference code does; this "
        "moves the fixed point off the transport (tests/test_mdt.py), so it is off by default"))
    vd_weight: float = Field(1.0, ge=0, description="lambda of the velocity-distillation term (0: velocity matching only)")
    guidance: float = Field(1.0, ge=0, description="CFG scale of the teacher's velocity")
    time_sampling: TimeSamplingConfig = Field(
        default_factory=lambda: TimeSamplingConfig(kind="logit-normal", mean=1.0, std=1.0),
        description="t of both terms (the reference code: logit-normal, mean 1, std 1)")


@METHODS.register("mdt", summary="MDT-dist: velocity matching + velocity distillation of the marginal-data transport",
                  paper="Few-step Flow for 3D Generation via Marginal-Data Transport Distillation (Zhou et al., 2025)")
class MDT(Method):
    """Zhou et al. 2025 (MDT-dist). The student phi (initialised from the teacher, same
    network) predicts the average velocity from t to 0, so x0 = x_t - t phi(x_t, t) and one
    step from noise is z - phi(z, 1). The transport t phi must match the integral of the
    teacher's velocity v_T; two tractable objectives replace it:

    - velocity matching (VM, Eq. 11-14): along the teacher's flow, d(t phi)/dt = v_T. The
      paper writes d(t phi)/dt = phi + t dphi/dt, so phi(x_t, t) regresses sg(v_T - t dphi/dt)
      at x_t = noised data, dphi/dt the detached backward difference
      D = (phi(x_t, t) - phi(x_{t-delta}, t - delta)) / delta along one teacher step
      (`derivative_form: product-rule`). Its fixed point solves phi + t phi' = v_T + O(delta),
      off the transport by O(delta) (tests/test_mdt.py). `derivative_form: difference` takes
      the backward difference of t phi itself, phi(x_{t-delta}, t - delta) + t D, against the
      step's mean velocity v_step = (x_t - x_{t-delta}) / delta, i.e. the target
      sg(v_step - (t - delta) D), whose fixed point is the transport along the teacher's steps;
    - velocity distillation (VD, Eq. 15-17): at a re-noised one-step sample x'_t of
      x' = z' - phi(z', 1), the student's marginal velocity u = d(t phi)/dt (the same finite
      difference) is compared with v_T, and phi(z', 1) is moved by du = sg(u - v_T) (so x'
      moves along u - v_T, the distribution-matching direction), with no auxiliary fake network.

    Implemented: both terms with weight `vd_weight`, the paper's product-rule difference along
    an Euler step (defaults) or the difference form and a Heun step (`solver`), times remapped
    into [delta, 1] (the reference's logit-normal(1, 1) by default), CFG on the teacher, the
    paper's Euler sampler or the consistency sampler (`sampler: multistep`: x0 re-noised with
    fresh noise, the independent noising phi is trained on). The reference code's derivative
    normalisation D / (|D| + 0.1) is an option, off by default: it makes the target
    v_T - t D / (|D| + 0.1), which the transport meets only where |D| is about 1 (on
    high-dimensional latents it mostly shrinks the derivative term). Not implemented: the JVP
    derivative, the paper's separate CFG scales for the two terms (one `guidance` here), its
    multi-phase targets, 3-D data.
    """

    Config = MDTConfig
    cfg: MDTConfig

    def __init__(self, cfg: MDTConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 **_: object) -> None:
        super().__init__()
        if (student.schedule.name, student.prediction) != ("flow", "velocity"):
            raise ConfigError("mdt's student predicts an average velocity on the flow schedule: set "
                              "student.schedule: flow and student.prediction: velocity")
        self.cfg, self.student, self.teacher = cfg, student, teacher

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def times(self, n: int, device: torch.device) -> Tensor:
        """t in [delta, 1], so that t - delta stays a valid time."""
        t = sample_time_from(self.cfg.time_sampling, n, self.student.schedule, device)
        return self.cfg.delta + (1 - self.cfg.delta) * t

    @torch.no_grad()
    def velocity_target(self, x_t: Tensor, t: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """(target, phi): the detached target of phi(x_t, t), v - t dphi/dt (`product-rule`) or
        v_step - (t - delta) dphi/dt (`difference`), and phi(x_t, t) itself, both (B, ...)."""
        cfg, step = self.cfg, self.cfg.delta
        v = self.teacher.velocity(x_t, t, labels, cfg.guidance)
        v_step = v
        if cfg.solver == "heun":
            v_next = self.teacher.velocity(x_t - step * v, t - step, labels, cfg.guidance)
            v_step = 0.5 * (v + v_next)
        phi = self.student.velocity(x_t, t, labels)
        derivative = (phi - self.student.velocity(x_t - step * v_step, t - step, labels)) / step
        if cfg.normalise_derivative:
            norm = derivative.flatten(1).norm(dim=1)
            derivative = derivative / expand_time(norm + 0.1, derivative)
        if cfg.derivative_form == "product-rule":
            return v - expand_time(t, v) * derivative, phi
        return v_step - expand_time(t - step, v) * derivative, phi

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        x0, labels = batch["x"], batch.get("y") if self.student.conditional else None
        n, device = len(x0), x0.device
        t = self.times(n, device)
        x_t = self.student.schedule.add_noise(x0, torch.randn_like(x0), t)
        target, _ = self.velocity_target(x_t, t, labels)
        losses = {"velocity_matching": F.mse_loss(self.student.velocity(x_t, t, labels), target)}
        if self.cfg.vd_weight > 0:
            noise = self.student.schedule.prior_scale() * torch.randn_like(x0)
            phi = self.student.velocity(noise, torch.ones(n, device=device), labels)
            sample = (noise - phi).detach()
            sample_t = self.student.schedule.add_noise(sample, torch.randn_like(sample), t)
            target_sample, phi_sample = self.velocity_target(sample_t, t, labels)
            gap = phi_sample - target_sample  # u - v_T: the student's marginal velocity minus the teacher's
            losses["velocity_distillation"] = self.cfg.vd_weight * (gap + phi - phi.detach()).pow(2).mean()
        return losses

    def student_steps(self) -> list[int]:
        return sorted(set(self.cfg.student_steps))

    def student_sampler(self) -> str:
        return self.cfg.sampler
