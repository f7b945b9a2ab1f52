"""`progressive`: progressive distillation, halving the sampler's steps each round."""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.samplers import ddim_step
from distill.diffusion.schedules import expand_time
from distill.errors import ConfigError
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class ProgressiveConfig(MethodConfig):
    name: Literal["progressive"] = "progressive"
    start_steps: int = Field(8, gt=1, description="teacher steps of the first round (a power of 2)")
    end_steps: int = Field(2, gt=0, description="student steps after the last round (a power of 2)")
    guidance: float = Field(1.0, ge=0, description="CFG scale of the original teacher (1: none)")

    @model_validator(mode="after")
    def _powers_of_two(self) -> ProgressiveConfig:
        ratio = self.start_steps / self.end_steps
        if ratio < 2 or ratio != 2 ** round(math.log2(ratio)):
            raise ValueError(
                f"start_steps/end_steps must be a power of 2 >= 2 (each round halves the steps); "
                f"got {self.start_steps}/{self.end_steps}")
        return self

    @property
    def rounds(self) -> int:
        return round(math.log2(self.start_steps / self.end_steps))


@METHODS.register("progressive", summary="progressive distillation: each round halves the steps",
                  paper="Progressive Distillation for Fast Sampling of Diffusion Models (Salimans & Ho, 2022)")
class Progressive(Method):
    """Salimans & Ho 2022, Algorithm 2, for any schedule.

    Round k trains a student taking N/2 steps to match two deterministic DDIM steps of its
    round teacher taking N steps: from x_t on the student's grid, the teacher goes
    t -> t - 1/N -> t - 2/N, and the student's single DDIM step must land on the same point,
    which fixes its x0 target x~ = (x'' - (s''/s) x_t) / (a'' - (s''/s) a) (Alg. 2). The
    target is regressed in velocity space on the flow schedule (where a DDIM step is an Euler
    step), and elsewhere in x0 space with the paper's truncated-SNR weight max(SNR, 1).
    The student of round k becomes the (frozen) teacher of round k + 1; the student starts
    each round from its own current weights (it was initialised from the teacher).
    train.steps is split evenly over the rounds. Class-conditional teachers are distilled at
    CFG scale `guidance` (the student learns the guided sampler; Meng et al. 2023 distil w
    as an input instead, which lives with guidance distillation).

    Implemented: the halving schedule, round teachers, data-driven x_t, DDIM targets on
    every schedule, truncated-SNR weighting off the flow schedule.
    """

    Config = ProgressiveConfig

    def __init__(self, cfg: ProgressiveConfig, student: Denoiser, teacher: Denoiser,
                 total_steps: int, **_: object) -> None:
        super().__init__()
        if total_steps < cfg.rounds:
            raise ConfigError(f"train.steps={total_steps} is less than the {cfg.rounds} rounds of "
                              f"method.start_steps={cfg.start_steps} -> end_steps={cfg.end_steps}")
        if student.schedule.name != teacher.schedule.name:
            raise ConfigError(
                f"progressive distillation steps the teacher's sampler on the student's grid: "
                f"student.schedule={student.schedule.name!r} must equal the teacher's "
                f"{teacher.schedule.name!r} (and student.init: teacher is what Algorithm 2 assumes)")
        self.cfg, self.student, self.teacher = cfg, student, teacher
        self.steps_per_round = total_steps // cfg.rounds
        self.round = 0
        # Round 0 distils the original teacher; later rounds a frozen copy of the student,
        # refreshed at each round start (checkpointed, unlike the original teacher).
        self.round_teacher = copy.deepcopy(student).eval().requires_grad_(False)

    def round_of(self, step: int) -> int:
        return min(step // self.steps_per_round, self.cfg.rounds - 1)

    def teacher_steps(self, round_index: int | None = None) -> int:
        return self.cfg.start_steps // 2 ** (self.round if round_index is None else round_index)

    def current_teacher(self) -> tuple[Denoiser, float]:
        """The denoiser to match this round and its guidance scale (the round teachers,
        distilled from the guided teacher, are already guided)."""
        if self.round == 0:
            return self.teacher, self.cfg.guidance
        return self.round_teacher, 1.0

    def before_step(self, step: int) -> None:
        if self.round_of(step) > self.round:
            self.round = self.round_of(step)
            self.round_teacher.load_state_dict(self.student.state_dict())

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        n_teacher = self.teacher_steps()
        n_student = n_teacher // 2
        x0 = batch["x"]
        labels = batch.get("y") if self.student.conditional else None
        eps = torch.randn_like(x0)
        schedule = self.student.schedule
        # t on the student's grid {1/n_student, ..., 1}
        t = torch.randint(1, n_student + 1, (len(x0),), device=x0.device).float() / n_student
        x_t = schedule.add_noise(x0, eps, t)
        dt = 1.0 / n_teacher
        teacher, guidance = self.current_teacher()
        with torch.no_grad():
            x_mid = ddim_step(teacher, x_t, t, t - dt, labels, guidance)
            x_end = ddim_step(teacher, x_mid, t - dt, t - 2 * dt, labels, guidance)
            a, s = expand_time(schedule.alpha(t), x0), expand_time(schedule.sigma(t), x0)
            a_end = expand_time(schedule.alpha(t - 2 * dt), x0)
            s_end = expand_time(schedule.sigma(t - 2 * dt), x0)
            ratio = s_end / s
            x0_target = (x_end - ratio * x_t) / (a_end - ratio * a)
        if schedule.name == "flow":  # = the x0 loss weighted 1 / t², close to max(SNR, 1)
            target_v = schedule.convert(x_t, t, x0_target, "x0", "velocity")
            return {"progressive": (self.student.velocity(x_t, t, labels) - target_v).pow(2).mean()}
        # elsewhere dx/dt spans orders of magnitude over t: the paper's truncated-SNR x0 loss
        weight = torch.exp(schedule.log_snr(t)).clamp(min=1.0)
        error = (self.student.x0(x_t, t, labels) - x0_target).pow(2).flatten(1).mean(1)
        return {"progressive": (weight * error).mean()}

    def student_steps(self) -> list[int]:
        return [self.cfg.end_steps]

    def student_sampler(self) -> str:
        return "ddim"

    def extra_state(self) -> dict[str, Any]:
        return {"round": self.round}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.round = int(state.get("round", 0))  # round_teacher's weights come with the model

