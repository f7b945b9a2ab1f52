"""Logit-based knowledge distillation of classifiers: the label-only baseline (`supervised`,
which also trains teachers), Hinton's soft-target KD (`kd`) and decoupled KD (`dkd`).

Training rows are the labelled split plus, when the dataset has one, its unlabelled transfer
set (label -100): cross-entropy sees only labelled rows, the teacher sees every row. The
teacher runs in eval mode without gradient; methods whose teacher sees only the training rows
as they are read its outputs precomputed once per row (`precompute_teacher`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distill.data.base import ArrayData
from distill.errors import ConfigError
from distill.kd import losses
from distill.method import Method, MethodConfig, ParamGroup
from distill.models.classifiers import ClassifierConfig
from distill.registry import METHODS
from distill.train.batches import Batch

IGNORE = losses.IGNORE_INDEX


def labelled_cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy over rows whose label is not -100 (0 when a batch has none, never NaN)."""
    keep = labels != IGNORE
    if not keep.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], labels[keep], label_smoothing=label_smoothing)


def warmup_weight(step: int, fraction: float, total_steps: int) -> float:
    """Linear warm-up of a loss weight from ~0 to 1 over the first `fraction` of training."""
    return min(1.0, (step + 1) / max(1.0, fraction * total_steps))


def kept_labels(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """`labels` with all but a seeded, class-stratified `fraction` replaced by -100 (at least
    one label per class is kept)."""
    if fraction >= 1.0:
        return labels.clone()
    out = torch.full_like(labels, IGNORE)
    gen = torch.Generator().manual_seed(seed)
    for c in labels.unique():
        rows = (labels == c).nonzero().flatten()
        keep = rows[torch.randperm(len(rows), generator=gen)[: max(1, round(fraction * len(rows)))]]
        out[keep] = labels[keep]
    return out


class ClassifierMethodConfig(MethodConfig):
    label_fraction: float = Field(1.0, gt=0, le=1, description=(
        "fraction of the training labels kept (stratified); the rest train as unlabelled rows"))
    labelled_share: float | None = Field(None, gt=0, lt=1, description=(
        "share of every batch drawn from the labelled rows when unlabelled rows (a transfer set, "
        "or labels removed by label_fraction) train too; None: batches drawn uniformly from all "
        "rows (a 25k transfer set then leaves ~14% labelled rows per batch)"))
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    precompute_teacher: bool = Field(True, description=(
        "compute the teacher's outputs for every training row once before training (the same "
        "values a live frozen teacher gives: eval mode, rows unchanged) instead of a teacher "
        "forward at every step; only methods whose teacher sees the rows as they are use it"))


class ClassifierMethod(Method):
    """Shared by every classifier method: the student, an optional frozen teacher, and
    training rows = labelled split (+ unlabelled transfer set) with -100 for missing labels."""

    family: ClassVar[str] = "classify"
    Config: ClassVar[type[ClassifierMethodConfig]] = ClassifierMethodConfig

    def __init__(self, cfg: ClassifierMethodConfig, *, student: nn.Module, teacher: nn.Module | None,
                 data: ArrayData, seed: int, total_steps: int) -> None:
        super().__init__()
        self.cfg, self.student, self.total_steps = cfg, student, total_steps
        if teacher is not None:
            self.teacher = teacher
        self._rows = self._training_rows(data, seed)
        if cfg.labelled_share is not None:
            labelled = int((self._rows["y"] != IGNORE).sum())
            if labelled in (0, len(self._rows["y"])):
                raise ConfigError(
                    f"method.labelled_share={cfg.labelled_share} splits batches between labelled "
                    f"and unlabelled rows, but method {cfg.name!r} trains on {labelled} labelled "
                    f"rows out of {len(self._rows['y'])}; unset it, or add unlabelled rows "
                    "(data.unlabelled, method.label_fraction < 1)")

    def _training_rows(self, data: ArrayData, seed: int) -> dict[str, Tensor]:
        x, y = data.train, kept_labels(data.train_labels, self.cfg.label_fraction, seed)
        if data.unlabelled is not None and self.uses_unlabelled:
            x = torch.cat([x, data.unlabelled])
            y = torch.cat([y, torch.full((len(data.unlabelled),), IGNORE, dtype=torch.long)])
        if not self.uses_unlabelled:  # label-only training: drop the rows whose label was removed
            x, y = x[y != IGNORE], y[y != IGNORE]
        return {"x": x, "y": y}

    @classmethod
    def student_config(cls, cfg: ClassifierMethodConfig, student: ClassifierConfig) -> ClassifierConfig:
        """The student's model config as this method trains and exports it (e.g. with a
        second head); unchanged by default."""
        return student

    @property
    def uses_unlabelled(self) -> bool:
        """Whether rows without labels are useful to this method (only with a teacher)."""
        return self.needs_teacher

    @property
    def caches_teacher_outputs(self) -> bool:
        """Whether this method's teacher only ever sees the training rows unchanged, so its
        outputs can be computed once per row (methods opt in; `precompute_teacher` opts out)."""
        return False

    def teacher_outputs(self, x: Tensor) -> Tensor:
        """What the method reads from its teacher(s) for inputs x (B, ...): logits (B, K) here."""
        return self.teacher_logits(x)

    def batch_teacher_outputs(self, batch: Batch) -> Tensor:
        """`teacher_outputs` of the batch's rows: the precomputed ones when the rows carry them."""
        cached = batch.get("teacher_outputs")
        return cached if cached is not None else self.teacher_outputs(batch["x"])

    @torch.no_grad()
    def precomputed_teacher_outputs(self, x: Tensor, chunk: int = 1024) -> Tensor:
        """`teacher_outputs` of all rows x (N, ...), in chunks on the teacher's device, with
        every frozen module in eval mode (as during training)."""
        self.train(self.training)  # frozen modules (teachers) to eval mode
        device = next(self.teacher.parameters()).device
        return torch.cat([self.teacher_outputs(rows.to(device)).cpu() for rows in x.split(chunk)])

    def batch_strata(self) -> tuple[Tensor, tuple[float, ...]] | None:
        """Labelled rows (stratum 0) make `labelled_share` of every batch, unlabelled rows the rest."""
        share = self.cfg.labelled_share
        if share is None:
            return None
        return (self._rows["y"] == IGNORE).long(), (share, 1 - share)

    def train_data(self) -> Batch:
        if self.caches_teacher_outputs and self.cfg.precompute_teacher and "teacher_outputs" not in self._rows:
            self._rows["teacher_outputs"] = self.precomputed_teacher_outputs(self._rows["x"])
        return self._rows

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        return self.teacher(x).float()


@METHODS.register("supervised", summary="train a classifier on labels only (the KD baseline; trains teachers)")
class Supervised(ClassifierMethod):
    """Cross-entropy on the labelled rows: the label-only student every KD method must beat,
    and the method that trains classifier teachers (teacher recipes)."""

    class Config(ClassifierMethodConfig):
        name: Literal["supervised"] = "supervised"

    needs_teacher: ClassVar[bool] = False
    trains_teacher: ClassVar[bool] = True

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        logits = self.student(batch["x"])
        return {"ce": labelled_cross_entropy(logits, batch["y"], self.cfg.label_smoothing)}


class SoftTargetConfig(ClassifierMethodConfig):
    """Options of Hinton's soft-target term, shared by `kd` and the methods built on it."""

    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the distillation term")
    divergence: losses.DivergenceName = "forward-kl"
    beta: float = Field(0.5, ge=0, le=1, description="beta of jsd / alpha of the skew KLs / head mass mu of adaptive-kl")


class SoftTargetMethod(ClassifierMethod):
    """A classifier method whose loss includes alpha · T² · D(teacher || student) + (1 - alpha) · CE."""

    cfg: SoftTargetConfig

    def soft_target_losses(self, student: Tensor, teacher: Tensor, labels: Tensor,
                           distill_student: Tensor | None = None) -> dict[str, Tensor]:
        """{"ce": (1 - alpha) CE on labelled rows, "kd": alpha T² D(teacher || student)} from
        logits (B, K); `distill_student` replaces `student` in the divergence (mixup inputs)."""
        cfg, out = self.cfg, {}
        if cfg.alpha < 1:
            out["ce"] = (1 - cfg.alpha) * labelled_cross_entropy(student, labels, cfg.label_smoothing)
        divergence = losses.DIVERGENCES[cfg.divergence]
        out["kd"] = cfg.alpha * divergence(student if distill_student is None else distill_student,
                                           teacher, temperature=cfg.temperature,
                                           **losses.divergence_options(cfg.divergence, cfg.beta))
        return out


@METHODS.register("kd", summary="soft-target KD: alpha T² KL(teacher/T || student/T) + (1 - alpha) CE",
                  paper="Distilling the Knowledge in a Neural Network (Hinton et al., 2015)")
class KD(SoftTargetMethod):
    """Hinton et al. 2015 (§2): loss = alpha · T² · D(p_t^T || p_s^T) + (1 - alpha) · CE(y, p_s),
    the divergence on every row (transfer set included), CE on labelled rows only.

    Implemented: temperature-softened targets with the T² gradient scale, any divergence from
    `distill.kd.losses` (forward KL is the paper's), an unlabelled transfer set (the paper's
    "transfer set"; MNIST-1D `data.unlabelled`), and input mixup on the transfer batch
    (`mixup`, the "consistent teaching" of Beyer et al. 2022, "Knowledge distillation: A good
    teacher is patient and consistent"): teacher and student see the same mixed input.
    Not implemented: the paper's specialist ensembles for very large label sets."""

    class Config(SoftTargetConfig):
        name: Literal["kd"] = "kd"
        mixup: float = Field(0.0, ge=0, description="Beta(m, m) input mixup on distillation rows; 0: off")

    @property
    def caches_teacher_outputs(self) -> bool:
        return self.cfg.mixup <= 0  # with mixup the teacher sees mixed inputs

    def distill_inputs(self, x: Tensor) -> Tensor:
        """x, or x mixed with a shuffled copy of itself (mixup) for the distillation term."""
        if self.cfg.mixup <= 0:
            return x
        lam = torch.distributions.Beta(self.cfg.mixup, self.cfg.mixup).sample((len(x),)).to(x)
        lam = lam.view(-1, *([1] * (x.ndim - 1)))
        return lam * x + (1 - lam) * x[torch.randperm(len(x), device=x.device)]

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        x, y = batch["x"], batch["y"]
        if self.cfg.mixup <= 0:
            return self.soft_target_losses(self.student(x), self.batch_teacher_outputs(batch), y)
        xd = self.distill_inputs(x)
        return self.soft_target_losses(self.student(x), self.teacher_logits(xd), y,
                                       distill_student=self.student(xd))


@METHODS.register("dkd", summary="decoupled KD: target-class and non-target-class KD weighted apart",
                  paper="Decoupled Knowledge Distillation (Zhao et al., CVPR 2022)")
class DKD(ClassifierMethod):
    """Zhao et al. 2022 (Eq. 7): loss = ce_weight · CE + warmup(step) · (alpha · TCKD + beta · NCKD) · T².

    Implemented: the decoupled loss (`distill.kd.losses.dkd`, exact log-space form), the paper's
    linear warm-up of the KD weight (`warmup_fraction` of training; 20 of 240 epochs there).
    Rows of the unlabelled transfer set have no ground-truth target: there the teacher's
    argmax is the target class (our extension; the paper trains on labelled data only)."""

    class Config(ClassifierMethodConfig):
        name: Literal["dkd"] = "dkd"
        alpha: float = Field(1.0, ge=0, description="weight of TCKD")
        beta: float = Field(8.0, ge=0, description="weight of NCKD")
        temperature: float = Field(4.0, gt=0)
        warmup_fraction: float = Field(0.1, ge=0, le=1)
        ce_weight: float = Field(1.0, ge=0, description="weight of the labelled cross-entropy "
                                 "(CE_WEIGHT of the reference code, mdistiller)")

    @property
    def caches_teacher_outputs(self) -> bool:
        return True

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        x, y, cfg = batch["x"], batch["y"], self.cfg
        logits, teacher = self.student(x), self.batch_teacher_outputs(batch)
        target = torch.where(y == IGNORE, teacher.argmax(-1), y)
        warm = warmup_weight(step, cfg.warmup_fraction, self.total_steps)
        return {"ce": cfg.ce_weight * labelled_cross_entropy(logits, y, cfg.label_smoothing),
                "dkd": warm * losses.dkd(logits, teacher, target, alpha=cfg.alpha, beta=cfg.beta,
                                         temperature=cfg.temperature)}
