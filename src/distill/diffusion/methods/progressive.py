"""`progressive`: progressive distillation, halving the sampler's steps each round."""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from distill.diffusion.denoiser import Denoiser
from distill.errors import ConfigError
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class ProgressiveConfig(MethodConfig):
    name: Literal["progressive"] = "progressive"
    start_steps: int = Field(8, gt=1, description="teacher steps of the first round (a power of 2)")
    end_steps: int = Field(2, gt=0, description="student steps after the last round (a power of 2)")

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
    """Salimans & Ho 2022, Algorithm 2, on the flow schedule.

    Round k trains a student taking N/2 steps to match two Euler steps of its round teacher
    taking N steps: from x_t on the student's grid, the teacher goes t -> t - 1/N -> t - 2/N,
    and the student's single Euler step must land on the same point, i.e. its velocity must
    equal (x_t - x_{t-2/N}) / (2/N). The student of round k becomes the (frozen) teacher of
    round k + 1; the student starts each round from its own current weights (it was
    initialised from the teacher). train.steps is split evenly over the rounds.

    Implemented: the halving schedule, round teachers, data-driven x_t, the target in
    velocity space (equivalent to the paper's x-target up to a per-t weight). Not
    implemented: the paper's truncated-SNR weighting (flow velocity regression is already
    well scaled) and the cosine VP schedule (comes with the image substrate).
    """

    Config = ProgressiveConfig

    def __init__(self, cfg: ProgressiveConfig, student: Denoiser, teacher: Denoiser,
                 total_steps: int, **_: object) -> None:
        super().__init__()
        if total_steps < cfg.rounds:
            raise ConfigError(f"train.steps={total_steps} is less than the {cfg.rounds} rounds of "
                              f"method.start_steps={cfg.start_steps} -> end_steps={cfg.end_steps}")
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

    def current_teacher(self) -> Denoiser:
        return self.teacher if self.round == 0 else self.round_teacher

    def before_step(self, step: int) -> None:
        if self.round_of(step) > self.round:
            self.round = self.round_of(step)
            self.round_teacher.load_state_dict(self.student.state_dict())

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def forward(self, batch: Tensor, group: str, step: int) -> dict[str, Tensor]:
        n_teacher = self.teacher_steps()
        n_student = n_teacher // 2
        x0 = batch
        eps = torch.randn_like(x0)
        # t on the student's grid {1/n_student, ..., 1}
        i = torch.randint(1, n_student + 1, (len(x0),), device=x0.device)
        t = i.float() / n_student
        x_t = self.student.schedule.add_noise(x0, eps, t)
        dt = 1.0 / n_teacher
        teacher = self.current_teacher()
        with torch.no_grad():
            x_mid = x_t - dt * teacher.velocity(x_t, t)
            x_end = x_mid - dt * teacher.velocity(x_mid, t - dt)
            target_v = (x_t - x_end) / (2 * dt)
        v = self.student.velocity(x_t, t)
        return {"progressive": (v - target_v).pow(2).mean()}

    def student_steps(self) -> list[int]:
        return [self.cfg.end_steps]

    def extra_state(self) -> dict[str, Any]:
        return {"round": self.round}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.round = int(state.get("round", 0))  # round_teacher's weights come with the model
