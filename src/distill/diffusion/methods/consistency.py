"""Consistency distillation: a student that maps any point of a teacher ODE trajectory to the
trajectory's end (`cd`), or to the start of its segment of the time axis (`mcd`, `tscd`)."""

from __future__ import annotations

import copy
from itertools import pairwise
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.embedding_loss import EmbeddingLossConfig, build_embedding_loss
from distill.diffusion.methods.ode_pairs import regression_loss
from distill.diffusion.samplers import ddim_step, sample
from distill.diffusion.teacher_pairs import prior_noise_rows
from distill.errors import ConfigError
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class ConsistencyConfig(MethodConfig):
    name: Literal["cd"] = "cd"
    intervals: int = Field(32, ge=2, description="N: the time axis [0, 1] cut into N equal steps")
    solver: Literal["euler", "heun"] = Field("heun", description="teacher ODE step between adjacent times")
    target_ema: float = Field(0.95, ge=0, lt=1, description=(
        "mu: the target network is an EMA of the student with this decay (0: the student "
        "itself without gradient, as in improved consistency training)"))
    loss: Literal["l2", "pseudo-huber"] = "l2"
    huber_c: float = Field(0.03, gt=0, description="c of the pseudo-Huber loss")
    guidance: float = Field(1.0, ge=0, description="CFG scale of the teacher step (1: none)")
    stochastic: float = Field(0.0, ge=0, le=1, description=(
        "eta of a stochastic (SDE) teacher step instead of the ODE step, as in SCott; 0: ODE"))
    student_steps: int = Field(1, gt=0, description="multistep-sampler steps the student is evaluated at")
    states: Literal["data", "trajectory"] = Field("data", description=(
        "where x_{t_n} comes from: noised training data, or the teacher's own ODE paths from "
        "prior noise, never reading the dataset (MLCM's teacher-trajectory states)"))
    trajectory_steps: int = Field(8, gt=0, description="teacher Heun steps from the noise to each t_n (states: trajectory)")
    prior_samples: int = Field(50000, gt=0, description="noise rows of the trajectory states")
    sampler_eta: float | None = Field(None, ge=0, le=1, description=(
        "noise strength between the student's sampling steps (SCott's control): DDIM with this eta, "
        "1 = fresh noise (the multistep consistency sampler), 0 = deterministic jumps; None: the "
        "method's own sampler (multistep for cd and slam, deterministic DDIM for mcd and tscd)"))
    embedding_loss: EmbeddingLossConfig = Field(default_factory=EmbeddingLossConfig, description=(
        "the supplementary embedding loss on the student's own samples (weight 0: off)"))


def ode_step(teacher: Denoiser, x_t: Tensor, t: Tensor, s: Tensor, solver: str,
             labels: Tensor | None, guidance: float) -> Tensor:
    """One step of the teacher's probability-flow ODE from t to s (both (B,)): Euler, or Heun
    (2nd order; Euler where s = 0, where the velocity of an x0 or eps network is undefined)."""
    dt = (s - t).view(-1, *([1] * (x_t.ndim - 1)))
    v = teacher.velocity(x_t, t, labels, guidance)
    x_euler = x_t + dt * v
    if solver == "euler":
        return x_euler
    v_next = teacher.velocity(x_euler, s.clamp(min=1e-4), labels, guidance)
    x_heun = x_t + dt * 0.5 * (v + v_next)
    return torch.where((s > 0).view_as(dt), x_heun, x_euler)


@torch.no_grad()
def teacher_trajectory_state(teacher: Denoiser, noise: Tensor, end: Tensor, steps: int,
                             labels: Tensor | None, guidance: float) -> Tensor:
    """x_end: (B, ...), the teacher's ODE solved from prior noise (B, ...) at t = 1 to each row's
    time end (B,) in `steps` Heun steps (the data-free states of TBCM and MLCM)."""
    x, t = teacher.schedule.prior_scale() * noise, torch.ones_like(end)
    for k in range(1, steps + 1):
        s = 1 + (end - 1) * k / steps
        x = ode_step(teacher, x, t, s, "heun", labels, guidance)
        t = s
    return x


def segment_start(n: Tensor, intervals: int, segments: int) -> Tensor:
    """Index (on the grid n / intervals) of the start of the segment holding t_n, for the time
    axis cut into `segments` equal parts, each a half-open interval (start, end]."""
    width = intervals // segments
    return (n - 1) // width * width


@METHODS.register("cd", summary="consistency distillation: the student maps any point of a teacher ODE path to its end",
                  paper="Consistency Models (Song et al., ICML 2023)")
class ConsistencyDistillation(Method):
    """Song et al. 2023, Algorithm 2: with t_n = n / N, x_{t_n} = alpha x0 + sigma eps from data,
    one teacher ODE step gives x^_{t_{n-1}}, and the loss is
    d(f_theta(x_{t_n}, t_n), f_theta-(x^_{t_{n-1}}, t_{n-1})), theta- = EMA_mu(theta) (Eq. 7-8).

    The consistency function is the student denoiser's x0 prediction: for every schedule with
    sigma(0) = 0 it is x itself at t = 0 (x0 = x_t - t v on the flow schedule), which is the
    paper's boundary condition f(x, 0) = x through c_skip/c_out (Eq. 5); with EDM
    preconditioning the denoiser applies Karras' c_skip/c_out as well. The target at
    t_{n-1} = 0 is x^_0 itself. Sampling is the multistep consistency sampler (Alg. 1).

    Implemented: the discretised CD loss with Euler or Heun teacher steps, EMA target with
    decay mu (0 gives iCT's stop-gradient target), L2 or pseudo-Huber (Song & Dhariwal
    2023) distance, CFG scale for class-conditional teachers, student initialised from the
    teacher (`student.init: teacher`, as in the paper), and `stochastic: eta`, SCott's
    (Liu et al. 2024) SDE teacher step in place of the ODE step, here a stochastic DDIM step
    with noise level eta, SCott's noise-strength control of the sampler (`sampler_eta`: DDIM
    with that eta between the student's steps), and the embedding loss on the student's samples
    (`embedding_loss`, distill.diffusion.embedding_loss). Not implemented: LPIPS (no perceptual
    network ships offline), SCott's multi-step SDE teacher solve (one stochastic step here) and
    its adversarial term, iCT's N curriculum and log-normal n sampling.
    """

    Config = ConsistencyConfig

    def __init__(self, cfg: ConsistencyConfig, student: Denoiser, teacher: Denoiser,
                 data: ArrayData | None = None, seed: int = 0, **_: object) -> None:
        super().__init__()
        if student.conditional != teacher.conditional:
            raise ConfigError("cd needs teacher and student to be both class-conditional or both not")
        self.cfg, self.student, self.teacher = cfg, student, teacher
        self.target = copy.deepcopy(student).eval().requires_grad_(False)
        if cfg.embedding_loss.weight > 0 and data is None:
            raise ConfigError("method.embedding_loss compares the student's samples with data; none was given")
        self.embedding = build_embedding_loss(cfg.embedding_loss, data) if data is not None else None
        self._rows = None
        if cfg.states == "trajectory":
            if data is None:
                raise ConfigError("method.states: trajectory needs the data's shape; none was given")
            num_classes = data.num_classes if student.conditional else None
            self._rows = prior_noise_rows(cfg.prior_samples, data.shape, num_classes, seed)

    def train_data(self) -> dict[str, Tensor] | None:
        return self._rows

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def segments(self, step: int) -> int:
        """Segments of the time axis at training step `step` (1: plain consistency)."""
        return 1

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        cfg, big_n = self.cfg, self.cfg.intervals
        x0 = batch["noise"] if cfg.states == "trajectory" else batch["x"]  # x0: its shape and device
        labels = batch.get("y") if self.student.conditional else None
        n = torch.randint(1, big_n + 1, (len(x0),), device=x0.device)
        start = segment_start(n, big_n, self.segments(step))
        t, s, b = n.float() / big_n, (n - 1).float() / big_n, start.float() / big_n
        if cfg.states == "trajectory":  # MLCM: a state on the teacher's own path
            x_t = teacher_trajectory_state(self.teacher, batch["noise"], t, cfg.trajectory_steps, labels, cfg.guidance)
        else:
            x_t = self.student.schedule.add_noise(x0, torch.randn_like(x0), t)
        with torch.no_grad():
            if cfg.stochastic > 0:  # SCott: a stochastic (SDE) step instead of the ODE step
                x_s = ddim_step(self.teacher, x_t, t, s, labels, cfg.guidance, eta=cfg.stochastic)
            else:
                x_s = ode_step(self.teacher, x_t, t, s, cfg.solver, labels, cfg.guidance)
            at_start = (n - 1 == start).view(-1, *([1] * (x0.ndim - 1)))
            # at the segment's start the consistency function is the identity (the boundary
            # condition); the clamp only keeps the discarded branch finite where s = 0
            target = torch.where(at_start, x_s, ddim_step(self.target, x_s, s.clamp(min=1 / big_n), b, labels))
        pred = self.student_jump(x_t, t, x_s, s, b, labels)
        losses = {"consistency": regression_loss(pred, target, cfg.loss, cfg.huber_c)}
        if self.embedding is not None:  # the student's samples at its fewest evaluated steps
            generated = sample(self.student, torch.randn_like(x0), min(self.student_steps()),
                               self.student_sampler(), cond=labels, eta=self.student_eta(),
                               seed=step)  # a stochastic sampler's inner noise: fresh each step
            losses["embedding"] = self.embedding(generated, batch)
        return losses

    def student_jump(self, x_t: Tensor, t: Tensor, x_s: Tensor, s: Tensor, b: Tensor,
                     labels: Tensor | None) -> Tensor:
        """The online student's consistency output, its DDIM jump to the segment start b, from
        x_t at t (`slam` queries it along the sub-path from x_t to the teacher's x_s)."""
        return ddim_step(self.student, x_t, t, b, labels)

    @torch.no_grad()
    def after_step(self, step: int, updated: list[str]) -> None:
        for target, online in zip(self.target.parameters(), self.student.parameters(), strict=True):
            target.lerp_(online, 1 - self.cfg.target_ema)

    def student_steps(self) -> list[int]:
        return [self.cfg.student_steps]

    def student_sampler(self) -> str:
        return self.default_sampler() if self.cfg.sampler_eta is None else "ddim"

    def default_sampler(self) -> str:
        """The sampler without `sampler_eta`: Song et al.'s multistep consistency sampler."""
        return "multistep"

    def student_eta(self) -> float:
        return self.cfg.sampler_eta or 0.0


class MultistepConsistencyConfig(ConsistencyConfig):
    name: Literal["mcd"] = "mcd"  # type: ignore[assignment]
    segments: int = Field(4, ge=1, description="K: the time axis cut into K segments; K sampler steps")

    @model_validator(mode="after")
    def _segments_divide_intervals(self) -> MultistepConsistencyConfig:
        if self.intervals % self.segments:
            raise ValueError(f"intervals ({self.intervals}) must be a multiple of segments ({self.segments})")
        return self


@METHODS.register("mcd", summary="multistep consistency distillation: consistency inside each of K time segments",
                  paper="Multistep Consistency Models (Heek et al., 2024)")
class MultistepConsistencyDistillation(ConsistencyDistillation):
    """Heek et al. 2024: the time axis is cut into K segments; inside a segment (b_{k-1}, b_k]
    the student is trained for consistency to the segment's start: its DDIM jump from x_{t_n}
    to b_{k-1} must match the EMA target's jump from the teacher's x^_{t_{n-1}} (the identity
    when t_{n-1} = b_{k-1}). K = 1 is `cd`. Sampling is K deterministic DDIM steps between the
    segment boundaries (the `ddim` sampler on the uniform K-step grid); one model serves other
    step counts too and is evaluated at 1, 2, 4 and K steps (a DDIM step then spans several
    segments, or part of one).

    Implemented: segment-wise consistency with the CD loss (teacher ODE step, EMA target, L2
    or pseudo-Huber) and the DDIM multistep sampler. Not implemented: the paper's adjusted
    DDIM (aDDIM) variance correction and its consistency *training* variant (no teacher)."""

    Config = MultistepConsistencyConfig
    cfg: MultistepConsistencyConfig

    def segments(self, step: int) -> int:
        return self.cfg.segments

    def student_steps(self) -> list[int]:
        return sorted({1, 2, 4, self.cfg.segments})

    def default_sampler(self) -> str:
        return "ddim"


class SegmentedConsistencyConfig(ConsistencyConfig):
    name: Literal["tscd"] = "tscd"  # type: ignore[assignment]
    segments: list[int] = Field(default_factory=lambda: [8, 4, 2, 1], min_length=1, description=(
        "segments per training phase (train.steps split evenly); the last is the exported step count"))

    @model_validator(mode="after")
    def _schedule(self) -> SegmentedConsistencyConfig:
        bad = [k for k in self.segments if k < 1 or self.intervals % k]
        if bad:
            raise ValueError(f"every entry of segments must divide intervals ({self.intervals}); got {bad}")
        if any(a < b for a, b in pairwise(self.segments)):
            raise ValueError(f"segments {self.segments} must not increase: each phase merges segments")
        return self


@METHODS.register("tscd", summary="trajectory-segmented consistency distillation with a progressive schedule of segments (8, 4, 2, 1)",
                  paper="Hyper-SD: Trajectory Segmented Consistency Model for Efficient Image Synthesis (Ren et al., 2024)")
class SegmentedConsistencyDistillation(MultistepConsistencyDistillation):
    """Hyper-SD's TSCD (Sec. 3.1): segment-wise consistency distillation (as `mcd`) with the
    number of segments reduced phase by phase, e.g. 8 -> 4 -> 2 -> 1, train.steps split evenly;
    the student carries over between phases, so later phases merge segments that are already
    consistent. The student is exported and evaluated at the last phase's segment count.

    Implemented: the progressive segment schedule over the CD loss with the original
    teacher's ODE step in every phase. Not implemented: Hyper-SD's human-feedback learning,
    score-distillation stage and LoRA merging."""

    Config = SegmentedConsistencyConfig
    cfg: SegmentedConsistencyConfig

    def __init__(self, cfg: SegmentedConsistencyConfig, student: Denoiser, teacher: Denoiser,
                 total_steps: int = 1, **kwargs: object) -> None:
        super().__init__(cfg, student, teacher, **kwargs)
        self.steps_per_phase = max(1, total_steps // len(cfg.segments))

    def segments(self, step: int) -> int:
        return self.cfg.segments[min(step // self.steps_per_phase, len(self.cfg.segments) - 1)]

    def student_steps(self) -> list[int]:
        return [self.cfg.segments[-1]]
