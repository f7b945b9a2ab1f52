"""Flow maps: a two-time student u(x_t, t, s) whose one jump x_s = x_t + (s - t) u lands where
the teacher's ODE would take x_t from time t to time s (`meanflow` from noised data,
`flow-map` and `boot` from prior noise only).

The student is a two-time backbone (`student.two_time: true`), initialised from the teacher
(`init: teacher`: the average velocity starts as the teacher's instantaneous one), and samples
with the `flow-map` sampler."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.consistency import ode_step
from distill.diffusion.schedules import expand_time
from distill.diffusion.teacher_pairs import prior_noise_rows
from distill.diffusion.timesteps import TimeSamplingConfig, sample_time_from
from distill.errors import ConfigError
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


def logit_normal_times() -> TimeSamplingConfig:
    return TimeSamplingConfig(kind="logit-normal", mean=-0.4, std=1.0)


class MeanFlowConfig(MethodConfig):
    name: Literal["meanflow"] = "meanflow"
    time_sampling: TimeSamplingConfig = Field(default_factory=logit_normal_times, description=(
        "how both times are drawn (the later one is t); MeanFlow's logit-normal(-0.4, 1)"))
    flow_ratio: float = Field(0.75, ge=0, le=1, description=(
        "share of samples with s = t: plain matching of the teacher's instantaneous velocity"))
    tangent: Literal["jvp", "finite-difference"] = Field("jvp", description=(
        "du/dt along the teacher's flow by forward-mode autodiff (torch.func.jvp), or by a "
        "central finite difference for backbones without forward-mode support"))
    fd_step: float = Field(1e-3, gt=0, description="h of the finite-difference tangent")
    adaptive_power: float = Field(1.0, ge=0, description=(
        "p of the adaptive loss weight 1 / (|error|² + c)^p (MeanFlow Sec. 4.3); 0: plain L2"))
    adaptive_c: float = Field(1e-3, gt=0, description="c of the adaptive loss weight")
    guidance: float = Field(1.0, ge=0, description="CFG scale of the teacher's velocity (1: none)")
    student_steps: list[int] = Field(default_factory=lambda: [1, 2], min_length=1, description=(
        "flow-map steps the student is evaluated and exported at"))


def adaptive_l2(pred: Tensor, target: Tensor, power: float, c: float) -> Tensor:
    """MeanFlow's robust loss (Geng et al. 2025, Sec. 4.3): mean of w |pred - target|² per
    sample with w = sg(1 / (|pred - target|² + c)^power); power 0 is the plain mean squared error."""
    error = (pred - target).pow(2).flatten(1).sum(1)
    if power > 0:
        return ((error.detach() + c).pow(-power) * error).mean()
    return error.mean() / pred[0].numel()


def require_two_time_student(student: Denoiser, teacher: Denoiser, method: str) -> None:
    if not student.two_time:
        raise ConfigError(f"method {method!r} trains a flow map: set student.two_time: true (an mlp "
                          "or unet backbone), with student.init: teacher to start from the teacher")
    if student.conditional != teacher.conditional:
        raise ConfigError(f"method {method!r} needs teacher and student to be both "
                          "class-conditional or both not")


class FlowMapStudent(Method):
    """Shared by the flow-map methods: one trainable two-time student, exported with its
    `student_steps` and sampled with the `flow-map` sampler."""

    cfg: MeanFlowConfig | FlowMapConfig | BootConfig

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def student_steps(self) -> list[int]:
        return sorted(set(self.cfg.student_steps))

    def student_sampler(self) -> str:
        return "flow-map"


@METHODS.register("meanflow", summary="average-velocity flow map u(x_t, t, s) from the teacher's velocity and the MeanFlow identity",
                  paper="Mean Flows for One-step Generative Modeling (Geng et al., 2025)")
class MeanFlow(FlowMapStudent):
    """Geng et al. 2025, as a distillation: the student's average velocity u(x_t, t, s) over
    [s, t] obeys the MeanFlow identity (Eq. 6) u = v(x_t, t) - (t - s) du/dt, with
    du/dt = v ∂_x u + ∂_t u the derivative along the flow. Training regresses u onto
    sg(v - (t - s) du/dt) (Eq. 9-10), with v the *teacher's* velocity at x_t (guided at scale
    `guidance`) instead of the conditional velocity eps - x0, and du/dt the JVP of the student
    along the tangent (v, 1, 0) (`torch.func.jvp`; a central finite difference as a fallback).
    x_t is noised data on the flow schedule; t and s are drawn by `time_sampling` (the later is
    t) and s = t for a share `flow_ratio` of the batch, where the loss is plain matching of
    the teacher's velocity. The adaptive weight 1 / (|error|² + c)^p (stop-gradient) is the
    paper's robust loss. One step samples x_0 = x_1 - u(x_1, 1, 0). The identity
    differentiates the network along time, so the recipes give teacher and student a gentle
    time embedding (`time_scale: 1`, as sCM's; docs/methods.md#meanflow): a student started
    from a teacher inherits the teacher's t-dependence.

    Implemented: the identity target with JVP or finite-difference tangents, logit-normal times,
    the s = t share, the adaptive weight, CFG on the teacher, the (t, t - s) time input. Not
    implemented: training from data alone (this is the distillation form), MeanFlow's CFG
    folded into the target with a guidance input.
    """

    Config = MeanFlowConfig
    cfg: MeanFlowConfig

    def __init__(self, cfg: MeanFlowConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 **_: object) -> None:
        super().__init__()
        require_two_time_student(student, teacher, cfg.name)
        self.cfg, self.student, self.teacher = cfg, student, teacher
        self.num_classes = data.num_classes if student.conditional else None

    def times(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(t, s), both (n,), t >= s, with s = t for a share `flow_ratio`."""
        schedule = self.student.schedule
        a = sample_time_from(self.cfg.time_sampling, n, schedule, device)
        b = sample_time_from(self.cfg.time_sampling, n, schedule, device)
        t, s = torch.maximum(a, b), torch.minimum(a, b)
        same = torch.rand(n, device=device) < self.cfg.flow_ratio
        return t, torch.where(same, t, s)

    def tangent(self, x_t: Tensor, t: Tensor, s: Tensor, v: Tensor,
                labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """(u(x_t, t, s) with gradients, du/dt along the flow without them)."""
        def u(x: Tensor, tt: Tensor, ss: Tensor) -> Tensor:
            return self.student.average_velocity(x, tt, ss, labels)

        if self.cfg.tangent == "jvp":
            value, dudt = torch.func.jvp(u, (x_t, t, s), (v, torch.ones_like(t), torch.zeros_like(s)))
            return value, dudt.detach()
        h = self.cfg.fd_step
        with torch.no_grad():
            dudt = (u(x_t + h * v, t + h, s) - u(x_t - h * v, t - h, s)) / (2 * h)
        return u(x_t, t, s), dudt

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        x0 = batch["x"]
        labels = batch.get("y") if self.num_classes else None
        t, s = self.times(len(x0), x0.device)
        x_t = self.student.schedule.add_noise(x0, torch.randn_like(x0), t)
        with torch.no_grad():
            v = self.teacher.velocity(x_t, t, labels, self.cfg.guidance)
        u, dudt = self.tangent(x_t, t, s, v, labels)
        target = v - expand_time(t - s, v) * dudt
        return {"meanflow": adaptive_l2(u, target, self.cfg.adaptive_power, self.cfg.adaptive_c)}


class FlowMapConfig(MethodConfig):
    name: Literal["flow-map"] = "flow-map"
    prior_samples: int = Field(50000, gt=0, description="noise rows the trainer batches from (the only inputs)")
    self_start: float = Field(0.5, ge=0, lt=1, description=(
        "share of the batch that starts at a time t < 1, at the student's own jump from the noise "
        "to t (no gradient), so that the map learns jumps from every t; the rest starts at t = 1"))
    flow_ratio: float = Field(0.25, ge=0, le=1, description=(
        "share of samples with s = t: plain matching of the teacher's velocity"))
    tangent: Literal["jvp", "finite-difference"] = Field("finite-difference", description=(
        "d/ds of the student's average velocity: forward-mode autodiff or a central difference"))
    fd_step: float = Field(0.02, gt=0, description="h of the finite-difference tangent")
    adaptive_power: float = Field(1.0, ge=0, description="p of the adaptive weight 1 / (|error|² + c)^p; 0: plain L2")
    adaptive_c: float = Field(1e-3, gt=0)
    guidance: float = Field(1.0, ge=0, description="CFG scale of the teacher's velocity (1: none)")
    student_steps: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)


class PriorNoiseFlowMap(FlowMapStudent):
    """Shared by the data-free flow maps: a two-time student trained on `cfg.prior_samples`
    prior noises (and generation labels for a class-conditional teacher), never on data."""

    cfg: FlowMapConfig | BootConfig

    def __init__(self, cfg: FlowMapConfig | BootConfig, student: Denoiser, teacher: Denoiser,
                 data: ArrayData, seed: int = 0, **_: object) -> None:
        super().__init__()
        require_two_time_student(student, teacher, cfg.name)
        self.cfg, self.student, self.teacher = cfg, student, teacher
        self.num_classes = data.num_classes if student.conditional else None
        self._rows = prior_noise_rows(cfg.prior_samples, data.shape, self.num_classes, seed)

    def train_data(self) -> dict[str, Tensor]:
        return self._rows


@METHODS.register("flow-map", summary="data-free flow map: the student's jumps from prior noise follow the teacher's velocity (Lagrangian)",
                  paper="Flow Map Distillation Without Data (Tong et al., 2025); How to build a consistency model: Learning flow maps via self-distillation (Boffi et al., 2025)")
class FlowMapDistillation(PriorNoiseFlowMap):
    """A data-free flow map: the only inputs are prior noises x_1 (Tong et al. 2025 sample
    nothing else, so the student can only learn what the teacher generates). The student's
    jump X(x_t, t, s) = x_t + (s - t) u(x_t, t, s) must follow the teacher's ODE, which is
    the Lagrangian condition ∂_s X = v_teacher(X, s) (Boffi et al. 2025, LMD): with the
    u-parameterisation, u + (s - t) ∂_s u = v_teacher(X, s), so u is regressed onto
    sg(v_teacher(X, s) - (s - t) ∂_s u). The teacher is asked at the student's *own* landing
    point X, so an error of the jump is corrected towards the teacher's flow there instead of
    compounding along the path. Starting points are the noise at t = 1, or, for a share
    `self_start`, the student's own jump from the noise to a time t < 1 (no gradient), so the
    map learns jumps from every t (multi-step sampling); s ~ U(0, t), and s = t for a share
    `flow_ratio`.

    Implemented: prior-only inputs (tested with an unreadable training split), the Lagrangian
    target with a JVP or finite-difference ∂_s u, self-generated starting points, the adaptive
    weight, CFG on the teacher. Not implemented: Tong et al.'s exact predictor-corrector
    objective (their corrector compares the generated marginal with the teacher's), their
    guidance and time schedules.
    """

    Config = FlowMapConfig
    cfg: FlowMapConfig

    def starts(self, noise: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """(x_t, t): the noise at t = 1, or for a share `self_start` the student's own jump to t."""
        n = len(noise)
        t = torch.ones(n, device=noise.device)
        moved = torch.rand(n, device=noise.device) < self.cfg.self_start
        t = torch.where(moved, torch.rand(n, device=noise.device).clamp(min=1e-3), t)
        with torch.no_grad():
            one = torch.ones_like(t)
            jumped = noise + expand_time(t - 1, noise) * self.student.average_velocity(noise, one, t, labels)
        return torch.where(expand_time(moved, noise), jumped, noise), t

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        noise = batch["noise"]
        labels = batch.get("y") if self.num_classes else None
        x_t, t = self.starts(noise, labels)
        s = t * torch.rand_like(t)
        s = torch.where(torch.rand_like(t) < self.cfg.flow_ratio, t, s)

        def u(ss: Tensor) -> Tensor:
            return self.student.average_velocity(x_t, t, ss, labels)

        if self.cfg.tangent == "jvp":
            value, duds = torch.func.jvp(u, (s,), (torch.ones_like(s),))
            duds = duds.detach()
        else:
            h = self.cfg.fd_step
            with torch.no_grad():
                duds = (u(s + h) - u(s - h)) / (2 * h)
            value = u(s)
        with torch.no_grad():
            landing = x_t + expand_time(s - t, x_t) * value
            v = self.teacher.velocity(landing, s, labels, self.cfg.guidance)
            target = v - expand_time(s - t, v) * duds
        return {"lagrangian": adaptive_l2(value, target, self.cfg.adaptive_power, self.cfg.adaptive_c)}


class BootConfig(MethodConfig):
    name: Literal["boot"] = "boot"
    prior_samples: int = Field(50000, gt=0, description="noise rows the trainer batches from (the only inputs)")
    delta: float = Field(1 / 32, gt=0, lt=1, description="δ: the bootstrap step from time t to t - δ")
    solver: Literal["euler", "heun"] = Field("euler", description="the teacher's ODE step over δ")
    guidance: float = Field(1.0, ge=0, description="CFG scale of the teacher step (1: none)")
    student_steps: list[int] = Field(default_factory=lambda: [1], min_length=1)


@METHODS.register("boot", summary="data-free bootstrapping: the student's prediction at t - δ matches one teacher step from its own prediction at t",
                  paper="BOOT: Data-free Distillation of Denoising Diffusion Models with Bootstrapping (Gu et al., 2023)")
class Boot(PriorNoiseFlowMap):
    """Gu et al. 2023: a time-conditioned student G(ε, t) predicts where the teacher's ODE
    started at noise ε is at time t, and is trained by bootstrapping from two consecutive
    times, with noise as the only input: G(ε, t - δ) is regressed onto one teacher ODE step
    (`solver`) from G(ε, t) (stop-gradient). Here G(ε, t) = X(ε, 1, t) = ε + (t - 1) u(ε, 1, t),
    the two-time student's jump from the noise, so the boundary G(ε, 1) = ε holds by
    construction and one step samples X(ε, 1, 0); BOOT's signal y_t (x_t = α_t y_t + σ_t ε)
    is ε - u(ε, 1, t) on the flow schedule, and the loss is its error weighted by α_{t-δ}²
    (the error of X itself), over δ².

    Implemented: the bootstrapping objective with an Euler or Heun teacher step, t ~ U(δ, 1],
    prior noise only (tested with an unreadable training split), CFG on the teacher. Not
    implemented: BOOT's signal-space loss weighting and its text-to-image specifics.
    """

    Config = BootConfig
    cfg: BootConfig

    def jump(self, noise: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        """G(ε, t) = X(ε, 1, t), with gradients."""
        one = torch.ones_like(t)
        return noise + expand_time(t - 1, noise) * self.student.average_velocity(noise, one, t, labels)

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        noise = batch["noise"]
        labels = batch.get("y") if self.num_classes else None
        delta = self.cfg.delta
        t = delta + (1 - delta) * (1 - torch.rand(len(noise), device=noise.device))  # (δ, 1]
        with torch.no_grad():
            x_t = self.jump(noise, t, labels)
            target = ode_step(self.teacher, x_t, t, t - delta, self.cfg.solver, labels, self.cfg.guidance)
        error = self.jump(noise, t - delta, labels) - target
        return {"bootstrap": error.pow(2).mean() / delta**2}
