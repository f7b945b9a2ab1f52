"""`teacher`: train a diffusion / flow-matching model from data (the teacher later runs distil)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.timesteps import TimeSamplingConfig, sample_time_from
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class TeacherTrainingConfig(MethodConfig):
    name: Literal["teacher"] = "teacher"
    time_sampling: TimeSamplingConfig = Field(default_factory=TimeSamplingConfig)
    cond_dropout: float = Field(0.1, ge=0, lt=1, description=(
        "probability of replacing the class label by the null class, so the model also learns "
        "the unconditional prediction classifier-free guidance needs (class-labelled data only)"))


def drop_labels(labels: Tensor, p: float, null: int) -> Tensor:
    """Replace each label by `null` with probability p (Ho & Salimans 2022, Alg. 1)."""
    if p <= 0:
        return labels
    return torch.where(torch.rand(labels.shape, device=labels.device) < p,
                       torch.full_like(labels, null), labels)


@METHODS.register("teacher", summary="train a diffusion/flow teacher on data (denoising regression)",
                  paper="Flow Matching for Generative Modeling (Lipman et al., 2023)")
class TeacherTraining(Method):
    """Denoising regression for any schedule and prediction type: x_t = alpha x0 + sigma eps
    and the network regresses its prediction type's target (velocity eps - x0 for flow
    matching, Lipman et al. 2023 Eq. 23 / rectified flow, Liu et al. 2023; eps for DDPM,
    Ho et al. 2020 Eq. 14; x0 under EDM preconditioning, Karras et al. 2022 Eq. 2 with their
    loss weight lambda = 1 / c_out², which makes the preconditioned target unit-variance).
    Class-labelled data trains a conditional model with label dropout for CFG."""

    Config = TeacherTrainingConfig
    needs_teacher = False
    trains_teacher = True

    def __init__(self, cfg: TeacherTrainingConfig, student: Denoiser, **_: object) -> None:
        super().__init__()
        self.cfg, self.student = cfg, student

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        x0, labels = batch["x"], batch.get("y")
        if labels is not None and self.student.conditional:
            labels = drop_labels(labels, self.cfg.cond_dropout, self.student.num_classes)
        eps = torch.randn_like(x0)
        t = sample_time_from(self.cfg.time_sampling, len(x0), self.student.schedule, x0.device)
        return {"denoising": denoising_loss(self.student, x0, labels, t, eps).mean()}


def denoising_loss(denoiser: Denoiser, x0: Tensor, labels: Tensor | None, t: Tensor,
                   eps: Tensor | None = None) -> Tensor:
    """Per-sample denoising regression (B,) at times t: (B,): x_t = alpha x0 + sigma eps (eps
    fresh when None) and the
    network regresses its prediction type's target, with EDM's weight 1 / c_out² under EDM
    preconditioning (see TeacherTraining)."""
    eps = torch.randn_like(x0) if eps is None else eps
    schedule = denoiser.schedule
    x_t = schedule.add_noise(x0, eps, t)
    target = schedule.from_x0_eps(x0, eps, t, denoiser.prediction)
    error = (denoiser(x_t, t, labels) - target).pow(2).flatten(1).mean(1)
    if denoiser.preconditioning == "edm":
        sigma = schedule.sigma(t) / schedule.alpha(t)
        sd = denoiser.sigma_data
        error = error * (sigma**2 + sd**2) / (sigma * sd) ** 2  # 1 / c_out²
    return error
