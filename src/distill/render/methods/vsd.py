"""Variational score distillation into a parametric renderer (ProlificDreamer, Wang et al.,
NeurIPS 2023).

SDS (`distill.render.methods.sds`) treats each render as a point estimate and pulls every one
towards the teacher's guided mode: renders of one prompt come out alike. VSD treats the N
renders of a prompt as particles of a distribution q and follows the gradient of
KL(q_t ‖ p_t) (Eq. 9):

    ∇_θ L_VSD = E_{t, ε}[ w(t) (ε̂_teacher(x_t; y, t) − ε̂_φ(x_t; y, t)) ∂x/∂θ ],

where ε̂_φ, the score of the renders' own noised distribution, is a copy of the teacher (a
LoRA of it in the paper; `fake_score.kind`) trained alongside by denoising regression on the
current renders (Eq. 10, Algorithm 1). SDS is the special case ε̂_φ = ε (q a point mass).

Implemented: particles (the renderer's `per_class` renders per class), the fake score
initialised to the teacher and updated `fake_updates` times per renderer update on detached
renders, the VSD gradient with w(t) = σ_t² through the renderer, guidance on the teacher.
Not implemented: the camera-pose conditioning of ε̂_φ (one view here), NeRF, and the paper's
annealed time schedule (t is uniform throughout, as in `sds`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from distill.diffusion.fake_score import FakeScoreConfig, build_fake_score
from distill.diffusion.methods.teacher import denoising_loss
from distill.method import ParamGroup
from distill.registry import METHODS
from distill.render.methods.sds import (
    ScoreDistillationConfig,
    ScoreDistillationMethod,
    distillation_surrogate,
    noise_renders,
    time_weight,
)
from distill.train.batches import Batch


class VSDRenderConfig(ScoreDistillationConfig):
    name: Literal["vsd-render"] = "vsd-render"
    fake_score: FakeScoreConfig = Field(default_factory=FakeScoreConfig, description=(
        "the renders' score ε̂_φ: a trainable copy of the teacher (kind: copy) or LoRA adapters "
        "on it (kind: lora, the paper's)"))
    fake_updates: int = Field(1, ge=1, description="fake-score updates per renderer update")
    fake_lr: float | None = Field(None, gt=0, description="the fake score's learning rate (None: train.lr)")


@METHODS.register("vsd-render", summary="variational score distillation: a renderer's particles follow "
                  "teacher minus their own learned score, for diversity SDS lacks",
                  paper="ProlificDreamer: High-Fidelity and Diverse Text-to-3D Generation with "
                  "Variational Score Distillation (Wang et al., NeurIPS 2023)")
class VSDRender(ScoreDistillationMethod):
    Config = VSDRenderConfig
    cfg: VSDRenderConfig

    def __init__(self, cfg: VSDRenderConfig, student: Any, teacher: Any, **kwargs: Any) -> None:
        super().__init__(cfg, student, teacher, **kwargs)
        self.fake = build_fake_score(teacher, cfg.fake_score)

    def param_groups(self) -> list[ParamGroup]:
        k = self.cfg.fake_updates
        return [ParamGroup("fake_score", self.fake.parameters(), lr=self.cfg.fake_lr),
                ParamGroup("student", self.student.parameters(), every=k, offset=k - 1)]

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        if group == "fake_score":
            with torch.no_grad():
                x, labels = self.render()
            t = self.cfg.t_min + (self.cfg.t_max - self.cfg.t_min) * torch.rand(len(x), device=x.device)
            return {"fake_denoising": denoising_loss(self.fake, x, labels, t).mean()}
        x, labels = self.render()
        schedule = self.teacher.schedule
        x_t, t, _ = noise_renders(schedule, x, self.cfg.t_min, self.cfg.t_max)
        with torch.no_grad():
            real = self.teacher.eps(x_t.detach(), t, labels, guidance=self.cfg.guidance)
            fake = self.fake.eps(x_t.detach(), t, labels)
        gradient = time_weight(schedule, t, self.cfg.weighting, x) * (real - fake)
        return {"vsd": distillation_surrogate(x, gradient)}
