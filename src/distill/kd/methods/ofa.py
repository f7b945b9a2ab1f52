"""One-for-All KD (OFA): intermediate student features are projected into the logit space by
small branches and each branch, like the final logits, learns the teacher's prediction with
the target class enhanced. Features are read through forward hooks at module paths."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distill.data.base import ArrayData
from distill.kd.hooks import FeatureTaps
from distill.kd.methods.features import probe_features
from distill.kd.methods.logits import (
    IGNORE,
    ClassifierMethod,
    ClassifierMethodConfig,
    labelled_cross_entropy,
)
from distill.method import ParamGroup
from distill.registry import METHODS
from distill.train.batches import Batch


def ofa_loss(student: Tensor, teacher: Tensor, target: Tensor, eps: float, temperature: float = 1.0) -> Tensor:
    """OFA loss (Hao et al. 2023, Eq. 6): -sum_c w_c log p_s,c with w = (p_t + m)^eps - m, m the
    one-hot target: the target class weighs (1 + p_t,y)^eps - 1, the others p_t,c^eps. eps = 1
    is soft-target cross-entropy; eps > 1 enhances the target class. Shapes: logits (B, K),
    target (B,) class indices. Mean over rows."""
    log_p_s = torch.log_softmax(student / temperature, dim=-1)
    with torch.no_grad():
        p_t = torch.softmax(teacher.float() / temperature, dim=-1)
        onehot = F.one_hot(target, p_t.shape[-1]).to(p_t)
        weight = (p_t + onehot).pow(eps) - onehot
    return -(weight * log_p_s).sum(-1).mean()


class LogitBranch(nn.Module):
    """Projects a feature map (B, C, *S) or vector (B, D) into logits (B, K): a 1x1
    convolution (or linear layer) to `width` channels, batch norm, ReLU, global average
    pooling, then a linear layer."""

    def __init__(self, feature_shape: tuple[int, ...], width: int, num_classes: int) -> None:
        super().__init__()
        channels, spatial = feature_shape[0], len(feature_shape) - 1
        if spatial == 0:
            self.body: nn.Module = nn.Sequential(nn.Linear(channels, width), nn.BatchNorm1d(width), nn.ReLU())
        else:
            conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial]
            norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial]
            self.body = nn.Sequential(conv(channels, width, 1), norm(width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)
        return self.head(h.flatten(2).mean(-1) if h.ndim > 2 else h)


@METHODS.register("ofa", summary="One-for-All KD: student stages projected to logits, target-enhanced KD at each",
                  paper="One-for-All: Bridge the Gap Between Heterogeneous Architectures in Knowledge "
                        "Distillation (Hao et al., NeurIPS 2023)")
class OFA(ClassifierMethod):
    """loss = ce_weight · CE + kd_weight · OFA(z_s, z_t) + ofa_weight · sum over `stages` of
    OFA(branch(features), z_t), with OFA the target-enhanced loss of `ofa_loss` (Eq. 6).

    Implemented: branches at any student module paths (hooks) projecting into the logit
    space, all learning the teacher's final logits (architecture-specific features are
    never compared, so teacher and student may be any two architectures), the adaptive
    target enhancement (eps), stage losses summed, CE on labelled rows; rows without a label
    take the teacher's argmax as the target class (our extension). Simplified: each branch
    is a 1x1 convolution + BN + ReLU + pooling + linear, not the paper's stack of depthwise-
    separable blocks sized to downsample ResNet stages (our backbones are a few layers).
    Branches train with the student and are not exported."""

    class Config(ClassifierMethodConfig):
        name: Literal["ofa"] = "ofa"
        stages: list[str] = Field(min_length=1, description="student module paths given a logit branch")
        eps: float = Field(1.0, ge=1.0, description="target enhancement exponent (1: plain soft targets)")
        temperature: float = Field(1.0, gt=0)
        ce_weight: float = Field(1.0, ge=0)
        kd_weight: float = Field(1.0, ge=0, description="weight of the OFA loss on the final logits")
        ofa_weight: float = Field(1.0, ge=0, description="weight of the OFA losses of the branches")
        branch_width: int = Field(64, gt=0)

    cfg: Config

    def __init__(self, cfg: Config, *, student: nn.Module, teacher: nn.Module | None,
                 data: ArrayData, seed: int, total_steps: int) -> None:
        super().__init__(cfg, student=student, teacher=teacher, data=data, seed=seed,
                         total_steps=total_steps)
        self.taps = FeatureTaps(student, cfg.stages, "the student")
        shapes = probe_features(student, self.taps, data.train[:2])
        self.branches = nn.ModuleList(LogitBranch(shapes[path], cfg.branch_width, data.num_classes)
                                      for path in cfg.stages)

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", [*self.student.parameters(), *self.branches.parameters()])]

    @property
    def caches_teacher_outputs(self) -> bool:
        return True

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        x, y, cfg = batch["x"], batch["y"], self.cfg
        logits, teacher = self.student(x), self.batch_teacher_outputs(batch)
        target = torch.where(y == IGNORE, teacher.argmax(-1), y)
        out = {"ce": cfg.ce_weight * labelled_cross_entropy(logits, y, cfg.label_smoothing),
               "ofa": cfg.kd_weight * ofa_loss(logits, teacher, target, cfg.eps, cfg.temperature)}
        for path, branch in zip(cfg.stages, self.branches, strict=True):
            out[f"ofa:{path}"] = cfg.ofa_weight * ofa_loss(
                branch(self.taps[path]), teacher, target, cfg.eps, cfg.temperature)
        return out
