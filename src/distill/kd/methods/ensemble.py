"""Distillation from several teachers: MEAL V2 (averaged soft labels plus a discriminator on
the outputs) and a routed mixture of teachers (MST-Distill)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, SerializeAsAny, field_validator
from torch import Tensor, nn

from distill.data.base import ArrayData
from distill.kd.methods.logits import (
    ClassifierMethod,
    ClassifierMethodConfig,
    labelled_cross_entropy,
)
from distill.method import ParamGroup
from distill.registry import METHODS
from distill.teachers import TeacherSource, teacher_source
from distill.train.batches import Batch


def teacher_sections(value: Any) -> list[TeacherSource]:
    """Validate `method.teachers`: a list of teacher sections (as the run's `teacher`)."""
    if not isinstance(value, list):
        raise ValueError("method.teachers must be a list of teacher sections")
    return [teacher_source(v, f"method.teachers[{i}]") for i, v in enumerate(value)]


def load_teacher_ensemble(sources: list[TeacherSource], data: ArrayData, where: str) -> nn.ModuleList:
    """The frozen classifiers of `sources`, each checked against the data like the teacher."""
    from distill.kd.task import check_teacher_classifier

    models = []
    for i, source in enumerate(sources):
        model, meta = source.load()
        check_teacher_classifier(meta, data, f"{data.name} ({where}[{i}])")
        models.append(model)
    return nn.ModuleList(models)


class EnsembleConfig(ClassifierMethodConfig):
    """`teachers`: teacher sections besides the run's `teacher`, validated like it."""

    teachers: list[SerializeAsAny[TeacherSource]] = Field(
        default_factory=list, description="teachers besides the run's teacher section")

    _teachers = field_validator("teachers", mode="before")(teacher_sections)


class EnsembleMethod(ClassifierMethod):
    """A classifier method with several frozen teachers: the run's `teacher` plus
    `method.teachers` (loaded and checked at build time, left out of checkpoints)."""

    cfg: EnsembleConfig
    frozen_modules: ClassVar[tuple[str, ...]] = ("teacher", "ensemble")

    def __init__(self, cfg: EnsembleConfig, *, student: nn.Module, teacher: nn.Module | None,
                 data: ArrayData, seed: int, total_steps: int) -> None:
        super().__init__(cfg, student=student, teacher=teacher, data=data, seed=seed,
                         total_steps=total_steps)
        self.ensemble = load_teacher_ensemble(cfg.teachers, data, "method.teachers")

    @property
    def caches_teacher_outputs(self) -> bool:
        return True

    @torch.no_grad()
    def teacher_outputs(self, x: Tensor) -> Tensor:
        """(B, N, K): the logits of every teacher, the run's teacher first."""
        return torch.stack([self.teacher_logits(x), *(m(x).float() for m in self.ensemble)], 1)


class OutputDiscriminator(nn.Module):
    """An MLP telling the student's logits (B, K) from the teachers' averaged logits: K -> width
    -> width -> 1 (a logit that the row came from the teachers)."""

    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(num_classes, width), nn.LeakyReLU(0.2),
                                 nn.Linear(width, width), nn.LeakyReLU(0.2), nn.Linear(width, 1))

    def forward(self, logits: Tensor) -> Tensor:
        return self.net(logits).squeeze(-1)


@METHODS.register("meal", summary="MEAL V2: KD from the averaged softmax of several teachers + an output discriminator",
                  paper="MEAL V2: Boosting Vanilla ResNet-50 to 80%+ Top-1 Accuracy on ImageNet without "
                        "Tricks (Shen & Savvides, 2020)")
class MEAL(EnsembleMethod):
    """student: soft-target CE to the mean of the teachers' softmax (T = 1, the paper's
    similarity loss) + adv_weight · non-saturating GAN loss against a discriminator on the
    logits (+ ce_weight · CE, 0 by default: the paper uses no hard labels);
    discriminator: binary cross-entropy, teachers' mean logits = real, student's = fake.

    Implemented: an ensemble of the run's `teacher` plus `method.teachers` (any teacher
    sections, e.g. the teacher recipe at other seeds), the averaged-softmax target, the
    discriminator on final outputs only, the student and discriminator stepping alternately
    on the same batch. The reference code lets student and discriminator minimise the same
    BCE (no adversarial sign); we use the adversarial form the paper describes. Not
    implemented: initialising the student from pretrained weights (use student.init)."""

    class Config(EnsembleConfig):
        name: Literal["meal"] = "meal"
        temperature: float = Field(1.0, gt=0)
        adv_weight: float = Field(0.1, ge=0, description="weight of the student's adversarial loss")
        ce_weight: float = Field(0.0, ge=0, description="weight of CE on labels (the paper: none)")
        discriminator_width: int = Field(64, gt=0)

    cfg: Config

    def __init__(self, cfg: Config, *, student: nn.Module, teacher: nn.Module | None,
                 data: ArrayData, seed: int, total_steps: int) -> None:
        super().__init__(cfg, student=student, teacher=teacher, data=data, seed=seed,
                         total_steps=total_steps)
        self.discriminator = OutputDiscriminator(data.num_classes, cfg.discriminator_width)

    @torch.no_grad()
    def ensemble_outputs(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(mean softmax at T, mean logits) of all teachers on the batch's rows, each (B, K)."""
        logits = self.batch_teacher_outputs(batch)
        return torch.softmax(logits / self.cfg.temperature, -1).mean(1), logits.mean(1)

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters()),
                ParamGroup("discriminator", self.discriminator.parameters())]

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        x, y, cfg = batch["x"], batch["y"], self.cfg
        probs, teacher_logits = self.ensemble_outputs(batch)
        if group == "discriminator":
            with torch.no_grad():
                fake = self.student(x)
            real_score, fake_score = self.discriminator(teacher_logits), self.discriminator(fake)
            return {"bce": F.binary_cross_entropy_with_logits(real_score, torch.ones_like(real_score))
                    + F.binary_cross_entropy_with_logits(fake_score, torch.zeros_like(fake_score))}
        logits = self.student(x)
        similarity = -(probs * torch.log_softmax(logits / cfg.temperature, -1)).sum(-1).mean()
        score = self.discriminator(logits)
        out = {"similarity": similarity,
               "adversarial": cfg.adv_weight * F.binary_cross_entropy_with_logits(score, torch.ones_like(score))}
        if cfg.ce_weight > 0:
            out["ce"] = cfg.ce_weight * labelled_cross_entropy(logits, y, cfg.label_smoothing)
        return out


class InputRouter(nn.Module):
    """Per-row mixing weights over N teachers from the input: flatten -> MLP -> softmax (B, N)."""

    def __init__(self, input_size: int, teachers: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(input_size, width), nn.ReLU(), nn.Linear(width, teachers))

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.net(x), dim=-1)


@METHODS.register("multi-teacher", summary="a router mixes specialised teachers per input; the student distils the mixture",
                  paper="MST-Distill: Mixture of Specialized Teachers for Cross-Modal Knowledge "
                        "Distillation (Li et al., ACM MM 2025)")
class MultiTeacher(EnsembleMethod):
    """Teachers: the run's `teacher` plus `method.teachers`. A router g(x) (an MLP on the input)
    weighs them per row; the target is the mixture q = sum_i g_i(x) softmax(z_i / T).

        router:  CE(y, log sum_i g_i(x) softmax(z_i))          on labelled rows
        student: (1 - alpha) CE + alpha T² KL(q || s)          q detached, every row

    so the router learns which teacher to trust for which input (from labels), and the
    student learns the routed mixture on the transfer set as well.
    Implemented: instance-level routing over a set of frozen teachers and distillation from
    the routed mixture (MST-Distill's key idea, for single-modality classifiers). Not
    implemented: MST-Distill's masked specialised teachers (MaskNets fitted to the student),
    its top-1 routing with a load-balancing loss (we mix softly and train the router on
    labels), and the cross-modal co-training stage."""

    class Config(EnsembleConfig):
        name: Literal["multi-teacher"] = "multi-teacher"
        teachers: list[SerializeAsAny[TeacherSource]] = Field(
            min_length=1, description="teachers besides the run's teacher section (at least one)")
        temperature: float = Field(2.0, gt=0)
        alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation term")
        router_width: int = Field(64, gt=0)

    cfg: Config

    def __init__(self, cfg: Config, *, student: nn.Module, teacher: nn.Module | None,
                 data: ArrayData, seed: int, total_steps: int) -> None:
        super().__init__(cfg, student=student, teacher=teacher, data=data, seed=seed,
                         total_steps=total_steps)
        self.router = InputRouter(data.train[0].numel(), 1 + len(self.ensemble), cfg.router_width)

    def param_groups(self) -> list[ParamGroup]:
        """Student and router step together (the student's loss sees the mixture detached)."""
        return [ParamGroup("student", [*self.student.parameters(), *self.router.parameters()])]

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        x, y, cfg = batch["x"], batch["y"], self.cfg
        teachers = self.batch_teacher_outputs(batch)  # (B, N, K)
        weights = self.router(x)  # (B, N)
        routed = torch.logsumexp(torch.log(weights + 1e-12)[..., None] + torch.log_softmax(teachers, -1), 1)
        with torch.no_grad():
            target = (weights[..., None] * torch.softmax(teachers / cfg.temperature, -1)).sum(1)
        logits = self.student(x)
        soft = -(target * torch.log_softmax(logits / cfg.temperature, -1)).sum(-1)
        entropy = -(target * torch.log(target.clamp_min(1e-12))).sum(-1)
        return {"router": labelled_cross_entropy(routed, y),
                "ce": (1 - cfg.alpha) * labelled_cross_entropy(logits, y, cfg.label_smoothing),
                "kd": cfg.alpha * cfg.temperature**2 * (soft - entropy).mean()}
