"""Few-class distillation through pseudo-subclasses read off the teacher's embeddings (LELP).

With two classes a teacher's soft targets carry one number per example; LELP recovers more
of what the teacher knows from its final-layer embedding: principal directions of each
class's embeddings become pseudo-subclasses, and the student learns to predict them.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from distill.data.base import ArrayData
from distill.errors import ConfigError
from distill.kd import losses
from distill.kd.hooks import module_at
from distill.kd.methods.logits import (
    ClassifierMethod,
    ClassifierMethodConfig,
    labelled_cross_entropy,
)
from distill.models.classifiers import ClassifierConfig
from distill.registry import METHODS
from distill.train.batches import Batch


class EmbeddingReader:
    """Records the input of the teacher's final linear layer (the embedding it classifies)."""

    def __init__(self, teacher: nn.Module, head_path: str) -> None:
        self.head = module_at(teacher, head_path, "teacher")
        if not isinstance(self.head, nn.Linear):
            raise ConfigError(f"method.head {head_path!r} is a {type(self.head).__name__}, not the "
                              "teacher's final nn.Linear; name the linear layer that produces its logits")
        self.embedding: Tensor | None = None
        self.head.register_forward_pre_hook(self._record)

    def _record(self, module: nn.Module, inputs: tuple) -> None:
        if module is self.head:  # a deep copy of the teacher carries the hook: ignore it
            self.embedding = inputs[0]


@torch.no_grad()
def fit_pseudo_subclasses(embeddings: Tensor, predicted: Tensor, head_weight: Tensor,
                          num_classes: int, directions: int) -> tuple[Tensor, Tensor]:
    """LELP step 1: per class, the top principal directions of the teacher's embeddings after
    removing their component in the span of the head's weights (which only sets the class).

    embeddings: (N, D); predicted: (N,) the teacher's class per row; head_weight: (K, D).
    Returns (axes (K, directions, D), offsets (K, directions)) such that
    embeddings @ axes[k].T - offsets[k] is the standardised projection (mean 0, variance 1
    over class k's rows) of the null-space part of the embedding on class k's directions.
    The axes lie in the null space of the head, so the raw embedding can be projected."""
    dim = embeddings.shape[1]
    if directions > dim - 1:
        raise ConfigError(f"method.directions {directions} must be below the teacher's embedding "
                          f"width {dim}")
    w, h = head_weight.double(), embeddings.double()
    flat = h - (h @ torch.linalg.pinv(w)) @ w  # the component orthogonal to the head's rows
    axes, offsets = [], []
    for c in range(num_classes):
        rows = flat[predicted == c]
        if len(rows) <= directions:
            raise ConfigError(f"the teacher predicts class {c} for only {len(rows)} training rows; "
                              f"LELP needs more than method.directions = {directions} per class")
        mean = rows.mean(0)
        centred = rows - mean
        variance, vectors = torch.linalg.eigh(centred.T @ centred / (len(rows) - 1))  # ascending
        top = vectors[:, -directions:].flip(1).T  # (directions, D), largest variance first
        scaled = top / variance[-directions:].flip(0).clamp_min(1e-12).sqrt()[:, None]
        axes.append(scaled)
        offsets.append(scaled @ mean)
    return torch.stack(axes).float(), torch.stack(offsets).float()


@METHODS.register("lelp", summary="few-class KD: pseudo-subclasses from principal directions of the teacher's embeddings",
                  paper="Linear Projections of Teacher Embeddings for Few-Class Distillation (Loo et al., 2024)")
class LELP(ClassifierMethod):
    """loss = (1 - alpha) · CE(y, class logits) + alpha · T² · KL(q_teacher || q_student) over
    K × 2·directions pseudo-subclasses.

    Teacher subclass logits: for class k and principal direction j with standardised projection
    p_kj = a_kj · (P h - m_k) (h the teacher's embedding, P the projector onto the null space
    of its head weights, m_k the class mean), the two subclasses (k, j, ±) get
    t = z_k + log_softmax_k(± scale · p_k·), so each class's subclasses sum to the teacher's
    class probability and their split encodes where the embedding lies along the class's
    main axes. The student (`SubclassClassifier`, head K × 2·directions) predicts them; its class
    logits are the logsumexp over each class's subclasses, and it is exported that way.

    Implemented from the paper's description (no reference code was found): PCA per class of
    the teacher's embeddings projected onto the null space of its classification weights,
    pseudo-subclasses from those directions, a student trained to replicate them with the
    class cross-entropy beside it. Reconstructed, not from the paper: splitting each
    direction into its positive and negative side and the within-class log-softmax that
    turns projections into subclass logits; which rows are fitted (every training row,
    transfer set included, grouped by the teacher's predicted class)."""

    class Config(ClassifierMethodConfig):
        name: Literal["lelp"] = "lelp"
        directions: int = Field(4, ge=1, description="principal directions per class (2 subclasses each)")
        scale: float = Field(1.0, gt=0, description="multiplies the standardised projections")
        temperature: float = Field(1.0, gt=0)
        alpha: float = Field(0.9, ge=0, le=1, description="weight of the subclass distillation term")
        head: str = Field("head", description="module path of the teacher's final nn.Linear")

    cfg: Config

    def __init__(self, cfg: Config, *, student: nn.Module, teacher: nn.Module | None,
                 data: ArrayData, seed: int, total_steps: int) -> None:
        super().__init__(cfg, student=student, teacher=teacher, data=data, seed=seed,
                         total_steps=total_steps)
        self._reader = EmbeddingReader(teacher, cfg.head)
        embeddings, predicted = [], []
        for x in self._rows["x"].split(4096):
            predicted.append(self.teacher_logits(x).argmax(-1))
            embeddings.append(self._reader.embedding.flatten(1))
        axes, offsets = fit_pseudo_subclasses(torch.cat(embeddings), torch.cat(predicted),
                                              self._reader.head.weight, data.num_classes, cfg.directions)
        self.register_buffer("class_axes", axes)  # (K, directions, D)
        self.register_buffer("class_offsets", offsets)  # (K, directions)

    @classmethod
    def student_config(cls, cfg: Config, student: ClassifierConfig) -> ClassifierConfig:
        return student.model_copy(update={"subclasses": 2 * cfg.directions})

    @torch.no_grad()
    def teacher_subclass_logits(self, x: Tensor) -> Tensor:
        """(B, K, 2·directions) pseudo-subclass logits of the teacher."""
        logits = self.teacher_logits(x)
        embedding = self._reader.embedding.flatten(1).float()  # (B, D)
        proj = torch.einsum("bd,kjd->bkj", embedding, self.class_axes) - self.class_offsets
        proj = self.cfg.scale * proj  # (B, K, directions)
        within = torch.log_softmax(torch.cat([proj, -proj], dim=-1), dim=-1)
        return logits[:, :, None] + within

    @property
    def caches_teacher_outputs(self) -> bool:
        return True

    def teacher_outputs(self, x: Tensor) -> Tensor:
        return self.teacher_subclass_logits(x)

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        x, y, cfg = batch["x"], batch["y"], self.cfg
        student = self.student.subclass_logits(x)
        teacher = self.batch_teacher_outputs(batch)
        out = {"subclass_kd": cfg.alpha * losses.forward_kl(student.flatten(1), teacher.flatten(1),
                                                            temperature=cfg.temperature)}
        if cfg.alpha < 1:
            out["ce"] = (1 - cfg.alpha) * labelled_cross_entropy(torch.logsumexp(student, -1), y,
                                                                 cfg.label_smoothing)
        return out
