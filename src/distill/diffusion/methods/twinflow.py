"""`twinflow`: self-adversarial one-step training. One network carries the data's flow at
positive times and the flow of its own one-step samples at negative times; the gap between
its two velocities at a one-step sample moves that sample, so no frozen fake score is kept."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.schedules import expand_time
from distill.errors import ConfigError
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class TwinFlowConfig(MethodConfig):
    name: Literal["twinflow"] = "twinflow"
    real_target: Literal["data", "teacher"] = Field("data", description=(
        "target of the real (positive-time) branch: data: eps - x on training data (TwinFlow, no "
        "fixed teacher); teacher: the frozen teacher's velocity at the same x_t"))
    rectify_weight: float = Field(0.5, ge=0, description="weight of the rectification loss on the one-step map")
    max_velocity_gap: float = Field(1.0, gt=0, description="clip of the fake-minus-real velocity gap, per element")
    t_min: float = Field(0.02, ge=0, lt=1, description="smallest time of the rectification comparison")
    t_max: float = Field(0.98, gt=0, le=1, description="largest time of the rectification comparison")

    @model_validator(mode="after")
    def _times(self) -> TwinFlowConfig:
        if self.t_min >= self.t_max:
            raise ValueError(f"t_min ({self.t_min}) must be below t_max ({self.t_max})")
        return self


def robust_error(pred: Tensor, target: Tensor, c: float = 1e-3) -> Tensor:
    """TwinFlow's reweighted squared error (scalar): per sample m = mean (pred - target)², each
    weighted by sg((m / c² + 1)^(-1/2)) / c, so ~ sqrt(m) for m >> c²: every sample's gradient has
    about unit size, whatever its error's scale (pred, target: (B, ...))."""
    m = (pred - target).pow(2).flatten(1).mean(1)
    return (m * ((m / c**2 + 1).rsqrt() / c).detach()).mean()


@METHODS.register("twinflow", summary="TwinFlow: one-step generation from self-adversarial flows (fake flow at negative times of the same network)",
                  paper="TwinFlow: Realizing One-step Generation on Large Models with Self-adversarial Flows (Cheng et al., 2025)")
class TwinFlow(Method):
    """Cheng et al. 2025 (TwinFlow). One two-time network F(x_t, t, r) (`student.two_time`,
    initialised from the teacher) with a signed time t in [-1, 1] (x_t is built with |t|):

    - the real branch, t > 0, r = t: flow matching on data, F(x_t, t, t) ~ eps - x;
    - the fake branch, t < 0: flow matching on the network's own one-step samples
      x_g = eps - F(eps, 1, 0) (detached), F(x_t, -t, -t) ~ eps - x_g (L_adv);
    - the one-step map F(eps, 1, 0) is rectified (L_rectify): at x_s = (1 - s) x_g + s eps',
      dv = clip(F(x_s, -s, -s) - F(x_s, s, s)) without gradient, and
      rho(F(eps, 1, 0), sg(F(eps, 1, 0) - dv)), which moves x_g along
      v_fake - v_real = x0_real - x0_fake: the distribution-matching direction, with the fake
      score being the network itself at negative times.

    Implemented: the twin (signed-time) flows in one network, L_adv, L_rectify with its
    clipped gap and weight 0.5, one-step sampling; the real branch's target from data or, as
    a distillation option, the frozen teacher's velocity. Every loss is the paper's reweighted error
    rho ~ sqrt(mean squared error) per sample (`robust_error`). Not implemented: the RCGM
    any-step consistency term (so the student serves 1 step, not any step), CFG-enhanced
    targets, the paper's batch split into quarters (each loss sees the whole batch).

    Key effect measured (8gaussians recipes, docs/methods.md#twinflow, BENCHMARKS.md, tested):
    the optimiser updates 215,042 parameters, the student's own, where `dmd2` updates 413,700
    (student and fake score), at 1.4x `dmd2`'s 1-step SWD (0.1311 vs 0.0926).
    """

    Config = TwinFlowConfig
    cfg: TwinFlowConfig

    def __init__(self, cfg: TwinFlowConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 **_: object) -> None:
        super().__init__()
        if not student.two_time or (student.schedule.name, student.prediction) != ("flow", "velocity"):
            raise ConfigError("twinflow's one-step map is F(eps, 1, 0) of a two-time flow network: set "
                              "student.two_time: true with schedule: flow and prediction: velocity")
        if student.conditional:
            raise ConfigError("twinflow is unconditional here; use an unconditional teacher and student")
        self.cfg, self.student, self.teacher, self.shape = cfg, student, teacher, data.shape

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def velocity(self, x_t: Tensor, t: Tensor) -> Tensor:
        """F(x_t, t, t): the instantaneous velocity of the real (t > 0) or fake (t < 0) flow."""
        return self.student.average_velocity(x_t, t, t)

    def one_step(self, noise: Tensor) -> tuple[Tensor, Tensor]:
        """(F(eps, 1, 0), x_g = eps - F(eps, 1, 0)) for noise (B, ...)."""
        n = len(noise)
        u = self.student.average_velocity(noise, torch.ones(n, device=noise.device), torch.zeros(n, device=noise.device))
        return u, noise - u

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        x = batch["x"]
        n, device = len(x), x.device
        losses = {}
        # the real branch: flow matching on data (or on the teacher's velocity)
        t, eps = torch.rand(n, device=device), torch.randn_like(x)
        x_t = expand_time(1 - t, x) * x + expand_time(t, x) * eps
        if self.cfg.real_target == "teacher":
            with torch.no_grad():
                target = self.teacher.velocity(x_t, t)
        else:
            target = eps - x
        losses["real_flow"] = robust_error(self.velocity(x_t, t), target)
        # the one-step map, rectified by the gap between the fake and the real flow
        u, x_g = self.one_step(torch.randn_like(x))
        with torch.no_grad():
            s = self.cfg.t_min + (self.cfg.t_max - self.cfg.t_min) * torch.rand(n, device=device)
            x_s = expand_time(1 - s, x_g) * x_g + expand_time(s, x_g) * torch.randn_like(x_g)
            gap = (self.velocity(x_s, -s) - self.velocity(x_s, s)).clamp(
                -self.cfg.max_velocity_gap, self.cfg.max_velocity_gap)
        losses["rectify"] = self.cfg.rectify_weight * robust_error(u, (u - gap).detach())
        # the fake branch: flow matching at negative times on the (detached) one-step samples
        fake = x_g.detach()
        t, eps = torch.rand(n, device=device), torch.randn_like(fake)
        fake_t = expand_time(1 - t, fake) * fake + expand_time(t, fake) * eps
        losses["fake_flow"] = robust_error(self.velocity(fake_t, -t), eps - fake)
        return losses

    def student_steps(self) -> list[int]:
        return [1]

    def student_sampler(self) -> str:
        return "flow-map"
