"""Self-distillation: a student learns from a trained copy of its own architecture (the
previous generation) mixed with the ground truth."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distill.data.base import ArrayData
from distill.errors import ModelMismatchError
from distill.kd import losses
from distill.kd.methods.logits import (
    IGNORE,
    ClassifierMethod,
    ClassifierMethodConfig,
    labelled_cross_entropy,
)
from distill.models.classifiers import parameter_count
from distill.registry import METHODS
from distill.train.batches import Batch


def same_architecture(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models have parameters of the same names and shapes."""
    shapes = lambda m: [(k, tuple(v.shape)) for k, v in m.state_dict().items()]  # noqa: E731
    return shapes(a) == shapes(b)


@METHODS.register("self-distill", summary="self-distillation from the previous generation, mixed with ground truth",
                  paper="Even your Teacher Needs Guidance: Ground-Truth Targets Dampen Regularization "
                        "Imposed by Self-Distillation (Borup & Andersen, NeurIPS 2021); Born-Again "
                        "Networks (Furlanello et al., 2018)")
class SelfDistill(ClassifierMethod):
    """Generation k of iterative self-distillation (Borup & Andersen 2021, Eq. 3, weighted MSE):

        loss = gt_weight · ||softmax(z) - onehot(y)||² + (1 - gt_weight) · ||softmax(z/T) - softmax(z_prev/T)||²

    on labelled rows; rows without a label see only the previous generation. The teacher must
    have the student's architecture (the previous generation: generation 1 distils the
    label-only run, `configs/mnist1d/self-distill-mnist1d.yaml`; chain runs for more
    generations, each a fresh initialisation as in both papers).
    Implemented: the ground-truth weighting of Borup & Andersen (gt_weight = their alpha;
    0.6 as in their README), `loss: kl` for Born-Again Networks' KD objective (then
    gt_weight weighs CE). Not implemented: the closed-form optimal alpha per generation (kernel
    regression only) and the l2 parameter penalty (use train.weight_decay)."""

    class Config(ClassifierMethodConfig):
        name: Literal["self-distill"] = "self-distill"
        gt_weight: float = Field(0.6, ge=0, le=1, description="weight of the ground-truth term (alpha)")
        temperature: float = Field(1.0, gt=0)
        loss: Literal["mse", "kl"] = Field("mse", description="mse: Borup & Andersen; kl: Born-Again Networks")

    cfg: Config

    def __init__(self, cfg: Config, *, student: nn.Module, teacher: nn.Module | None,
                 data: ArrayData, seed: int, total_steps: int) -> None:
        super().__init__(cfg, student=student, teacher=teacher, data=data, seed=seed,
                         total_steps=total_steps)
        if teacher is not None and not same_architecture(student, teacher):
            raise ModelMismatchError(
                f"self-distill needs a teacher with the student's architecture (the previous "
                f"generation), but the teacher has {parameter_count(teacher):,} parameters in other "
                f"shapes than the student's {parameter_count(student):,}; train the teacher with the "
                "student's model config (method: supervised), or use method kd for another teacher")

    @property
    def caches_teacher_outputs(self) -> bool:
        return True

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        x, y, cfg = batch["x"], batch["y"], self.cfg
        logits, previous = self.student(x), self.batch_teacher_outputs(batch)
        labelled = y != IGNORE
        if cfg.loss == "kl":
            return {"ce": cfg.gt_weight * labelled_cross_entropy(logits, y, cfg.label_smoothing),
                    "self": (1 - cfg.gt_weight) * losses.forward_kl(logits, previous, temperature=cfg.temperature)}
        probs = torch.softmax(logits, -1)
        onehot = F.one_hot(y.clamp_min(0), probs.shape[-1]).to(probs)
        gt = ((probs - onehot).pow(2).sum(-1) * labelled).sum() / labelled.sum().clamp_min(1)
        soft = (torch.softmax(logits / cfg.temperature, -1)
                - torch.softmax(previous / cfg.temperature, -1)).pow(2).sum(-1).mean()
        return {"gt": cfg.gt_weight * gt, "self": (1 - cfg.gt_weight) * soft}
