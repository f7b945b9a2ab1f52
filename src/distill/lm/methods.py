"""Token-level language-model distillation through the chunked vocabulary loss: the
cross-entropy baseline (`lm-ce`), sequence-level KD on teacher generations (`seq-kd`) and KD
on a text dataset (`lm-kd`, with TAID); the on-policy methods build on `lm-kd` in on_policy.py.

Every loss is normalised per target token over the process's whole batch (all accumulation
micro-batches together): `prepare_batch` stores accum / tokens-in-batch, so the trainer's
division by the number of micro-batches leaves sum over tokens / tokens, and accumulating two
micro-batches gives the gradient of the one big batch (tested), however the target tokens are
spread between them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from distill.data.text import TokenData
from distill.errors import ConfigError, ModelMismatchError
from distill.kd.losses import DivergenceName
from distill.lm.chunked import chunked_vocab_loss
from distill.lm.monitor import TeacherHackingMonitor
from distill.lm.targets import (
    DenseTargets,
    SparseTargets,
    predicting_hidden_states,
    token_divergence,
)
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS
from distill.train.batches import Batch


class LMMethodConfig(MethodConfig):
    monitor_every: int = Field(0, ge=0, description=(
        "every N steps log KL to the teacher on training blocks and held-out NLL (teacher-hacking monitor); 0: off"))
    monitor_blocks: int = Field(8, gt=0, description="blocks the monitor measures on, per split")
    chunk_size: int = Field(256, gt=0, description=(
        "token rows per chunk of the vocabulary loss (256: ~0.1x the naive peak memory at vocab 49k, bench/lm_kd.py)"))


def split_fused(total: Tensor, parts: dict[str, Tensor]) -> dict[str, Tensor]:
    """Named losses whose sum is `total` (value and gradient) and whose values are the fused
    pass's per-term totals: the gradient rides on the first term, the others are detached."""
    names = list(parts)
    out = {name: parts[name].detach() for name in names}
    out[names[0]] = out[names[0]] + (total - total.detach())
    return out


class LMMethod(Method):
    """Shared by LM methods: a transformers causal-LM student, a frozen teacher, and token
    blocks {"input_ids", "target_mask", "row"} as training rows."""

    family: ClassVar[str] = "lm"
    Config: ClassVar[type[LMMethodConfig]] = LMMethodConfig

    def __init__(self, cfg: LMMethodConfig, *, student: nn.Module, teacher: nn.Module | None,
                 data: TokenData, seed: int, total_steps: int,
                 cached_targets: SparseTargets | None = None) -> None:
        super().__init__()
        self.cfg, self.student, self.total_steps = cfg, student, total_steps
        if teacher is not None:
            self.teacher = teacher
        self.cached_targets = cached_targets
        self._rows = data.training_rows()
        n = cfg.monitor_blocks
        self.monitor = TeacherHackingMonitor(cfg.monitor_every, (data.train_ids[:n], data.train_mask[:n]),
                                             (data.test_ids[:n], data.test_mask[:n]))

    def after_step(self, step: int, updated: list[str]) -> None:
        if updated and hasattr(self, "teacher"):
            self.monitor.measure(self.student, self.teacher, step)

    def step_logs(self) -> dict[str, float]:
        return dict(self.monitor.last)

    @classmethod
    def check_inputs(cls, cfg: Any, teacher: nn.Module) -> None:
        """Refuse data or a teacher this method cannot use (called before training)."""

    def train_data(self) -> Batch:
        return self._rows

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def prepare_batch(self, batch: Batch, micro_batches: int) -> Batch:
        tokens = batch["target_mask"][:, 1:].sum().clamp(min=1)
        scale = torch.full((len(batch["input_ids"]),), micro_batches, dtype=torch.float32,
                           device=tokens.device) / tokens
        return {**batch, "loss_scale": scale}

    def positions(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(flat indices of the target positions (N,), their labels (N,), their weights (N,))
        over the (B, L-1) predicting positions of the batch."""
        ids, mask = batch["input_ids"], batch["target_mask"][:, 1:]
        weights = mask * batch["loss_scale"][:, None] if "loss_scale" in batch else mask
        flat = weights.reshape(-1)
        index = (flat != 0).nonzero().squeeze(-1)
        return index, ids[:, 1:].reshape(-1)[index], flat[index]

    def fused_loss(self, batch: Batch, index: Tensor, weights: Tensor, row_loss: Any) -> dict[str, Tensor]:
        """The chunked vocabulary loss of the student at the flat target positions `index`."""
        hidden = predicting_hidden_states(self.student, batch["input_ids"])
        hidden = hidden.reshape(-1, hidden.shape[-1])[index]
        total, parts = chunked_vocab_loss(hidden, self.student.get_output_embeddings().weight,
                                          row_loss, weights, chunk_size=self.cfg.chunk_size)
        return split_fused(total, parts)


@METHODS.register("lm-ce", summary="train the LM student on the text's next tokens only (the KD baseline)")
class LMCrossEntropy(LMMethod):
    """Next-token cross-entropy on the same tokens and steps: the baseline `lm-kd` must beat.
    The teacher is loaded only for its tokenizer and the side-by-side evaluation."""

    class Config(LMMethodConfig):
        name: Literal["lm-ce"] = "lm-ce"

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        index, labels, weights = self.positions(batch)

        def row_loss(logits: Tensor, rows: Tensor) -> dict[str, Tensor]:
            return {"ce": F.cross_entropy(logits, labels[rows], reduction="none")}

        return self.fused_loss(batch, index, weights, row_loss)


class TAIDConfig(BaseModel):
    """TAID's adaptive interpolation schedule (Shing et al., ICLR 2025, Alg. 1)."""

    model_config = ConfigDict(extra="forbid")
    t_start: float = Field(0.4, ge=0, lt=1, description="interpolation weight of the teacher at step 0")
    t_end: float = Field(1.0, gt=0, le=1, description="its final (and largest) value")
    alpha: float = Field(5e-4, ge=0, le=1, description="step size of the adaptive increase")
    beta: float = Field(0.99, ge=0, lt=1, description="momentum of the loss's relative change")

    @model_validator(mode="after")
    def _ordered(self) -> TAIDConfig:
        if self.t_end < self.t_start:
            raise ValueError(f"taid.t_end {self.t_end} is below taid.t_start {self.t_start}")
        return self


class TAIDSchedule:
    """t_n = min(t_end, max(linear(n), t_{n-1} + alpha · sigmoid(m_n) · (1 - t_{n-1}))), with
    m_n the momentum (beta) of the loss's relative decrease (J_{n-1} - J_n) / J_{n-1}: t grows
    faster while the student is learning quickly, and never slower than the linear schedule
    from t_start to t_end (TAID, Alg. 1)."""

    def __init__(self, cfg: TAIDConfig, total_steps: int) -> None:
        self.cfg, self.total_steps = cfg, total_steps
        self.t, self.momentum, self.prev_loss = cfg.t_start, 0.0, None

    def update(self, loss: float, step: int) -> None:
        cfg = self.cfg
        if self.prev_loss is not None:
            change = (self.prev_loss - loss) / (abs(self.prev_loss) + 1e-12)
            self.momentum = cfg.beta * self.momentum + (1 - cfg.beta) * change
        linear = cfg.t_start + (cfg.t_end - cfg.t_start) * min(1.0, (step + 1) / self.total_steps)
        grown = self.t + cfg.alpha * (1 / (1 + math.exp(-self.momentum))) * (1 - self.t)
        self.t = min(cfg.t_end, max(linear, grown))
        self.prev_loss = loss

    def state(self) -> dict[str, Any]:
        return {"t": self.t, "momentum": self.momentum, "prev_loss": self.prev_loss}

    def load(self, state: dict[str, Any]) -> None:
        self.t, self.momentum, self.prev_loss = state["t"], state["momentum"], state["prev_loss"]


@METHODS.register("seq-kd", summary="sequence-level KD: train the LM student on the teacher's own generations",
                  paper="Sequence-Level Knowledge Distillation (Kim & Rush, EMNLP 2016)")
class SequenceKD(LMCrossEntropy):
    """Kim & Rush 2016 (§3.2, "sequence-level KD"): the student is trained with cross-entropy
    on the teacher's outputs for the training prompts instead of the reference text. The data
    is a `{"prompt", "completion"}` jsonl written by `distill lm generate` (sampled or greedy
    teacher completions; only completion tokens are targets), and it must come from this
    run's teacher (checked against the file's generation manifest).
    Not implemented: beam search (the paper's approximation of the teacher's mode; generation
    here samples at `--temperature`, or is greedy at 0) and sequence-level interpolation."""

    class Config(LMMethodConfig):
        name: Literal["seq-kd"] = "seq-kd"

    @classmethod
    def check_inputs(cls, cfg: Any, teacher: nn.Module) -> None:
        from distill.lm.cache import teacher_fingerprint
        from distill.lm.generate import read_generation_manifest

        path = cfg.data.path
        manifest = None if path is None else read_generation_manifest(path)
        if manifest is None:
            raise ConfigError(f"seq-kd trains on teacher generations: data.path must be a jsonl written "
                              f"by `distill lm generate` (no generation manifest beside {path})")
        if manifest.get("teacher") != teacher_fingerprint(teacher):
            raise ModelMismatchError(f"{path} was generated by another teacher than this run's; "
                                     "generate it again with this config")


@METHODS.register("lm-kd", summary="token-level KD of a causal LM: alpha D(teacher || student) + (1 - alpha) CE",
                  paper="Distilling the Knowledge in a Neural Network (Hinton et al., 2015); "
                        "GKD (Agarwal et al., 2024) for the divergence family")
class LMKD(LMMethod):
    """Token-level KD on a text dataset (supervised KD in GKD's terms, Agarwal et al. 2024, §3):
    loss per target token = alpha · D(p_t || p_s) + (1 - alpha) · CE, D any divergence of
    `distill.kd.losses` (forward KL, reverse KL, generalized JSD(beta) with exact endpoints,
    skew KLs, TVD, adaptive KL with head mass beta), loss temperature `temperature` with the
    T² factor.

    Teacher signal (`signal`): `dense` runs the live teacher on every batch and compares full
    distributions (chunk by chunk); `top-k` keeps the live teacher's top `top_k` ids and a tail
    bucket; `cache` reads the top-k targets from the offline cache (`distill.lm.cache`), built
    before training in `cache_dir` (default: the run's teacher-cache/) — no teacher forward
    during training.
    TAID (`taid: {...}`, Shing et al. 2025, "Temporally Adaptive Interpolated Distillation"):
    the target is softmax((1 - t) · stopgrad(student logits) + t · teacher logits) (on the k + 1
    buckets for top-k signals), t rising from t_start to t_end by the adaptive rule of its Alg. 1
    (`TAIDSchedule`), checkpointed with the run. The rule is written from the paper; the
    reference code was not available to compare with.
    On-policy data (GKD's lambda) is `on-policy` / `distillspec` (on_policy.py).
    """

    class Config(LMMethodConfig):
        name: Literal["lm-kd"] = "lm-kd"
        divergence: DivergenceName = "forward-kl"
        beta: float = Field(0.5, ge=0, le=1, description="beta of jsd / alpha of the skew KLs / head mass mu of adaptive-kl")
        temperature: float = Field(1.0, gt=0, description="loss temperature (not the sampling one)")
        alpha: float = Field(1.0, ge=0, le=1, description="weight of the distillation term")
        signal: Literal["dense", "top-k", "cache"] = "dense"
        top_k: int = Field(64, gt=0, description="teacher ids kept by signal top-k / cache")
        cache_dir: Path | None = Field(None, description="where signal cache keeps the teacher's top-k")
        taid: TAIDConfig | None = Field(None, description="TAID's interpolated, adaptive target")

        @model_validator(mode="after")
        def _sparse_at_t1(self) -> Any:
            if self.signal != "dense" and self.temperature != 1.0:
                raise ValueError(f"signal {self.signal} stores the teacher's top-k at temperature 1; "
                                 "set temperature: 1 or signal: dense")
            return self

    cfg: Config

    def __init__(self, cfg: Config, **kwargs: Any) -> None:
        super().__init__(cfg, **kwargs)
        self.taid = TAIDSchedule(cfg.taid, self.total_steps) if cfg.taid else None
        self._step_loss = 0.0

    def before_step(self, step: int) -> None:
        self._step_loss = 0.0

    def after_step(self, step: int, updated: list[str]) -> None:
        super().after_step(step, updated)
        if self.taid is not None and updated:
            self.taid.update(self._step_loss, step)

    def extra_state(self) -> dict[str, Any]:
        return {"taid": self.taid.state()} if self.taid else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.taid is not None and "taid" in state:
            self.taid.load(state["taid"])

    def teacher_targets(self, batch: Batch, index: Tensor) -> DenseTargets | SparseTargets:
        """The teacher's targets at the flat target positions `index` of the batch."""
        if self.cfg.signal == "cache":
            store = self.cached_targets
            rows = batch["row"].to(store.indices.device)
            ids, lps = store.indices[rows], store.logprobs[rows]
            k = ids.shape[-1]
            return SparseTargets(ids.reshape(-1, k)[index].long(), lps.reshape(-1, k)[index].float())
        with torch.no_grad():
            hidden = predicting_hidden_states(self.teacher, batch["input_ids"])
            dense = DenseTargets(hidden.reshape(-1, hidden.shape[-1])[index],
                                 self.teacher.get_output_embeddings().weight)
        return dense.topk(self.cfg.top_k, self.cfg.chunk_size) if self.cfg.signal == "top-k" else dense

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        cfg = self.cfg
        index, labels, weights = self.positions(batch)
        targets = self.teacher_targets(batch, index)

        t = self.taid.t if self.taid else 1.0

        def row_loss(logits: Tensor, rows: Tensor) -> dict[str, Tensor]:
            out = {"kd": cfg.alpha * token_divergence(logits, targets.chunk(rows), name=cfg.divergence,
                                                      temperature=cfg.temperature, beta=cfg.beta,
                                                      interpolate=t)}
            if cfg.alpha < 1:
                out["ce"] = (1 - cfg.alpha) * F.cross_entropy(logits, labels[rows], reduction="none")
            return out

        losses = self.fused_loss(batch, index, weights, row_loss)
        if self.taid is not None:  # TAID's schedule reads the step's loss (one sync per forward)
            self._step_loss += float(losses["kd"].detach())
        return losses

    def step_logs(self) -> dict[str, float]:
        return {**super().step_logs(), **({"taid/t": self.taid.t} if self.taid else {})}
