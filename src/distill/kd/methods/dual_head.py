"""Dual-head optimisation (DHO): a label head and a distillation head on one backbone, trained
apart and mixed at inference."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from distill.kd.methods.logits import SoftTargetConfig, SoftTargetMethod
from distill.models.classifiers import ClassifierConfig, DualHeadConfig
from distill.registry import METHODS
from distill.train.batches import Batch


@METHODS.register("dho", summary="dual heads: labels train one, the teacher the other; mixed at inference",
                  paper="Simple Semi-supervised Knowledge Distillation from Vision-Language Models via "
                        "Dual-Head Optimization (Kang et al., 2025)")
class DHO(SoftTargetMethod):
    """loss = (1 - alpha) · CE(label head, y) [labelled rows] + alpha · T² · KL(teacher || distill head)
    [every row]; prediction p = (1 - inference_alpha) softmax(z_label) + inference_alpha ·
    softmax(z_distill / inference_beta) (the paper's Eq. for inference, its few-shot convention).

    Implemented: the two linear heads on the shared features (`DualHeadClassifier`, exported
    as one model whose output is the log of the mixed prediction), the semi-supervised split
    (unlabelled rows reach only the distillation head), the reference code's teacher
    temperature 2 and 0.5/0.5 loss weights. Not implemented: the grid search of (alpha, beta)
    after each epoch (here they are config values), CLIP-text initialisation of the heads."""

    class Config(SoftTargetConfig):
        name: Literal["dho"] = "dho"
        temperature: float = Field(2.0, gt=0)
        alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation head's loss")
        inference_alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation head at inference")
        inference_beta: float = Field(1.0, gt=0, description="temperature of the distillation head at inference")

    cfg: Config

    @classmethod
    def student_config(cls, cfg: Config, student: ClassifierConfig) -> ClassifierConfig:
        return student.model_copy(update={"dual_head": DualHeadConfig(
            alpha=cfg.inference_alpha, beta=cfg.inference_beta)})

    @property
    def caches_teacher_outputs(self) -> bool:
        return True

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        x, y = batch["x"], batch["y"]
        label_logits, distill_logits = self.student.heads(x)
        return self.soft_target_losses(label_logits, self.batch_teacher_outputs(batch), y,
                                       distill_student=distill_logits)
