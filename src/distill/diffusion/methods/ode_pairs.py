"""`ode-pairs`: regress a few-step student onto the teacher's (noise -> ODE solution) pairs."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.embedding_loss import EmbeddingLossConfig, build_embedding_loss
from distill.diffusion.samplers import sample
from distill.diffusion.teacher_pairs import cached_teacher_pairs
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class TeacherPairsConfig(MethodConfig):
    """Options shared by the methods that regress onto teacher (noise, ODE solution) pairs."""

    teacher_steps: int = Field(64, gt=0, description="steps of the teacher solve making the pairs")
    teacher_sampler: Literal["euler", "heun", "dpm++2m"] = "euler"
    guidance: float = Field(1.0, ge=0, description="CFG scale of the teacher solve (1: none)")
    loss: Literal["l2", "pseudo-huber"] = Field("l2", description="l2, or pseudo-Huber sqrt(|d|² + c²) - c")
    huber_c: float = Field(0.03, gt=0, description="c of the pseudo-Huber loss")


class OdePairsConfig(TeacherPairsConfig):
    name: Literal["ode-pairs"] = "ode-pairs"
    student_steps: int = Field(1, gt=0, description="Euler steps the student takes")
    pairs: int = Field(50000, ge=0, description="pairs generated once and cached; 0: fresh each batch")
    embedding_loss: EmbeddingLossConfig = Field(default_factory=EmbeddingLossConfig, description=(
        "the supplementary embedding loss on the student's samples against data (weight 0: off)"))


def regression_loss(pred: Tensor, target: Tensor, kind: str, c: float) -> Tensor:
    """Mean L2, or pseudo-Huber sqrt(|d|^2 + c^2) - c (Song & Dhariwal 2023) per sample."""
    sq = (pred - target).pow(2).flatten(1).sum(1)
    if kind == "pseudo-huber":
        return (torch.sqrt(sq + c * c) - c).mean()
    return sq.mean() / pred[0].numel()


@METHODS.register("ode-pairs", summary="regress the student onto teacher (noise, ODE solution) pairs",
                  paper="Knowledge Distillation in Iterative Generative Models (Luhman & Luhman, 2021)")
class OdePairs(Method):
    """Luhman & Luhman 2021 (the 'KD' baseline of FastGen and AccVideo's synthetic
    trajectories): solve the teacher ODE from noise eps to x0 = Φ_teacher(eps), then train
    the student's `student_steps`-step Euler solve G(eps) to match it, ||G(eps) - x0||².

    Implemented: pairs generated once (cached in memory, `pairs`) or fresh each batch
    (`pairs: 0`), L2 or pseudo-Huber loss, multi-step students trained end to end through
    their own sampler, class-conditional pairs (the teacher solved with CFG scale
    `guidance`, so the student learns the guided sampler), the embedding loss on the student's
    samples (`embedding_loss`). Not implemented: LPIPS (no
    pretrained perceptual network ships offline).
    """

    Config = OdePairsConfig

    def __init__(self, cfg: OdePairsConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, **_: object) -> None:
        super().__init__()
        self.cfg, self.student, self.teacher = cfg, student, teacher
        self.shape, self.seed = data.shape, seed
        self.num_classes = data.num_classes if student.conditional else None
        self._bank = self.make_pairs(cfg.pairs) if cfg.pairs else None
        self.embedding = build_embedding_loss(cfg.embedding_loss, data)

    @torch.no_grad()
    def teacher_solution(self, noise: Tensor, labels: Tensor | None) -> Tensor:
        return sample(self.teacher, noise, self.cfg.teacher_steps, self.cfg.teacher_sampler,
                      cond=labels, guidance=self.cfg.guidance)

    def make_pairs(self, n: int) -> dict[str, Tensor]:
        return cached_teacher_pairs(self.teacher, n, self.shape, self.num_classes, self.seed,
                             self.cfg.teacher_steps, self.cfg.teacher_sampler, self.cfg.guidance)

    def train_data(self) -> dict[str, Tensor] | None:
        return self._bank

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        labels = batch.get("y") if self.num_classes else None
        if self._bank is not None:
            noise, target = batch["noise"], batch["target"]
        else:
            noise = torch.randn_like(batch["x"])
            target = self.teacher_solution(noise, labels)
        pred = sample(self.student, noise, self.cfg.student_steps, cond=labels)
        losses = {"regression": regression_loss(pred, target, self.cfg.loss, self.cfg.huber_c)}
        if self.embedding is not None:
            losses["embedding"] = self.embedding(pred, batch)
        return losses

    def student_steps(self) -> list[int]:
        return [self.cfg.student_steps]
