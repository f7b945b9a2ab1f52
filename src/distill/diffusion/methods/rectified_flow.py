"""Rectified flow: retrain a flow on the teacher's own (noise, sample) couplings so that its
paths straighten (`reflow`), then distil it to one step (`instaflow`), or do both into a
smaller student (`slimflow`).

All three read the teacher's couplings only, never the dataset: a bank of `pairs` noises z
and the teacher's ODE solutions x = Φ_teacher(z), made once and cached (`cached_teacher_pairs`)."""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.ode_pairs import TeacherPairsConfig, regression_loss
from distill.diffusion.methods.teacher import denoising_loss
from distill.diffusion.samplers import sample
from distill.diffusion.teacher_pairs import cached_teacher_pairs
from distill.diffusion.timesteps import TimeSamplingConfig, sample_time_from
from distill.errors import ConfigError
from distill.method import Method, ParamGroup
from distill.registry import METHODS


class ReflowConfig(TeacherPairsConfig):
    """`loss` applies to the velocity error (Lee et al. 2024 use pseudo-Huber with LPIPS)."""

    name: Literal["reflow"] = "reflow"
    pairs: int = Field(50000, gt=0, description="teacher couplings (z, Φ_teacher(z)) made once and kept")
    time_sampling: TimeSamplingConfig = Field(default_factory=TimeSamplingConfig, description=(
        "how t is drawn; kind: u-shaped is Lee et al. 2024's choice for reflow"))
    student_steps: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1, description=(
        "Euler steps the reflowed student is evaluated and exported at"))


def coupling_loss(student: Denoiser, data: Tensor, noise: Tensor, t: Tensor, labels: Tensor | None,
                  kind: str, huber_c: float) -> Tensor:
    """The flow-matching loss on a fixed coupling: x_t = alpha x + sigma z with z the noise the
    teacher started from, and the student regresses its prediction type's target (on the flow
    schedule the velocity z - x; Liu et al. 2023, Eq. 1 with (X_0, X_1) = (x, z)).
    kind "pseudo-huber" applies sqrt(|d|² + c²) - c to each sample's error."""
    error = denoising_loss(student, data, labels, t, noise)  # per sample, mean over dimensions
    if kind == "pseudo-huber":
        dims = data[0].numel()
        return (torch.sqrt(error * dims + huber_c**2) - huber_c).mean()
    return error.mean()


@METHODS.register("reflow", summary="k-rectified flow: retrain the flow on the teacher's (noise, sample) couplings",
                  paper="Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow (Liu et al., ICLR 2023)")
class Reflow(Method):
    """Liu et al. 2023, the reflow step (Alg. 1): draw z ~ N(0, I), solve the teacher's ODE to
    x = Φ_teacher(z), and train the student by flow matching on the fixed coupling (x, z)
    instead of independent pairs. Paths of a flow trained on its own coupling cross less, so
    they straighten and few Euler steps suffice; running reflow on a reflowed model gives the
    k-rectified flow (use a `reflow` run as the next run's teacher). The eval option
    `eval.straightness: true` measures it (Liu et al. 2023, Sec. 2.3).

    Options from Lee et al. 2024 ("Improving the Training of Rectified Flows"): the U-shaped
    time distribution (`time_sampling: {kind: u-shaped}`), the pseudo-Huber loss, and the
    student initialised from the teacher (`student.init: teacher`).

    Implemented: couplings from any teacher schedule and sampler (guided when class-
    conditional), the coupling loss in the student's prediction space on the flow schedule,
    L2 or pseudo-Huber. Not implemented: LPIPS (no perceptual network ships offline), Lee et
    al.'s real-data couplings by inversion and their incorporation of the 1-RF's training
    data.
    """

    Config = ReflowConfig
    cfg: ReflowConfig

    def __init__(self, cfg: ReflowConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, **_: object) -> None:
        super().__init__()
        if student.schedule.name != "flow":
            raise ConfigError(
                f"method {cfg.name!r} trains the straight interpolation x_t = (1 - t) x + t z: set "
                f"student.schedule: flow (got {student.schedule.name!r}); the teacher may use any schedule")
        if student.conditional != teacher.conditional:
            raise ConfigError(f"method {cfg.name!r} needs teacher and student to be both "
                              "class-conditional or both not")
        self.cfg, self.student, self.teacher = cfg, student, teacher
        self.num_classes = data.num_classes if student.conditional else None
        bank = cached_teacher_pairs(teacher, cfg.pairs, data.shape, self.num_classes, seed,
                             cfg.teacher_steps, cfg.teacher_sampler, cfg.guidance)
        self._bank = {**bank, "index": torch.arange(cfg.pairs)}

    def train_data(self) -> dict[str, Tensor]:
        return self._bank

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def labels(self, batch: dict[str, Tensor]) -> Tensor | None:
        return batch.get("y") if self.num_classes else None

    def reflow_loss(self, batch: dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
        """The coupling loss on the batch's teacher couplings (with `noise` in place of theirs)."""
        data = batch["target"]
        t = sample_time_from(self.cfg.time_sampling, len(data), self.student.schedule, data.device)
        return coupling_loss(self.student, data, batch["noise"] if noise is None else noise, t,
                             self.labels(batch), self.cfg.loss, self.cfg.huber_c)

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        return {"reflow": self.reflow_loss(batch)}

    def student_steps(self) -> list[int]:
        return sorted(set(self.cfg.student_steps))


class InstaFlowConfig(ReflowConfig):
    name: Literal["instaflow"] = "instaflow"  # type: ignore[assignment]
    reflow_fraction: float = Field(0.5, gt=0, lt=1, description=(
        "share of train.steps spent on reflow; the rest distils the reflowed flow to one step"))
    distill_teacher_steps: int = Field(16, gt=0, description=(
        "Euler steps of the reflowed flow's solve making the distillation targets (its paths are straight)"))
    student_steps: list[int] = Field(default_factory=lambda: [1], min_length=1)  # type: ignore[assignment]


@METHODS.register("instaflow", summary="reflow, then distil the reflowed flow into a one-step generator",
                  paper="InstaFlow: One Step is Enough for High-Quality Diffusion-Based Text-to-Image Generation (Liu et al., ICLR 2024)")
class InstaFlow(Reflow):
    """Liu et al. 2024 (InstaFlow, Sec. 3): phase 1 is `reflow` on the teacher's couplings (the
    2-rectified flow, initialised from the teacher); phase 2 freezes a copy of it and distils
    it into a one-step student: x^ = z - v_θ(z, 1) regressed onto the reflowed flow's own ODE
    solution Φ_2RF(z) (`distill_teacher_steps` Euler steps) from the same noises z. The
    straighter coupling of the 2-RF is what makes one-step distillation work (their Fig. 4:
    distilling the 1-RF directly fails). train.steps is split by `reflow_fraction`; the
    student continues from its phase-1 weights.

    Implemented: both phases in one resumable run (the frozen 2-RF is checkpointed; its
    targets are remade from it on resume), L2 or pseudo-Huber distillation loss. Not
    implemented: LPIPS, text conditioning (class conditions work). The trainer's EMA spans
    both phases: keep train.ema_decay short enough to forget phase 1 (0.995 on the toy recipes).
    """

    Config = InstaFlowConfig
    cfg: InstaFlowConfig

    def __init__(self, cfg: InstaFlowConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, total_steps: int = 2, **_: object) -> None:
        super().__init__(cfg, student, teacher, data, seed)
        self.switch_step = max(1, min(total_steps - 1, round(cfg.reflow_fraction * total_steps)))
        self.phase = 0
        # the reflowed flow of phase 1, frozen when phase 2 starts (checkpointed)
        self.reflowed = copy.deepcopy(student).eval().requires_grad_(False)
        self._distill_targets: Tensor | None = None

    def before_step(self, step: int) -> None:
        if step >= self.switch_step and self.phase == 0:
            self.phase = 1
            self.reflowed.load_state_dict(self.student.state_dict())
            self._distill_targets = None

    @torch.no_grad()
    def distill_targets(self, device: torch.device) -> Tensor:
        """Φ_2RF(z) for every noise z of the bank, made once per phase 2 (and after a resume)."""
        if self._distill_targets is None:
            noise, labels = self._bank["noise"], self._bank.get("y")
            chunk = max(1, 2**17 // max(1, noise[0].numel()))
            parts = [sample(self.reflowed, noise[i : i + chunk].to(device), self.cfg.distill_teacher_steps,
                            cond=None if labels is None else labels[i : i + chunk].to(device))
                     for i in range(0, len(noise), chunk)]
            self._distill_targets = torch.cat(parts)
        return self._distill_targets

    def one_step(self, noise: Tensor, labels: Tensor | None) -> Tensor:
        """The student's one-step sample z - v(z, 1) (one Euler step), with gradients."""
        return sample(self.student, noise, 1, cond=labels)

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        if self.phase == 0:
            return {"reflow": self.reflow_loss(batch)}
        target = self.distill_targets(batch["noise"].device)[batch["index"]]
        pred = self.one_step(batch["noise"], self.labels(batch))
        return {"distill": regression_loss(pred, target, self.cfg.loss, self.cfg.huber_c)}

    def step_logs(self) -> dict[str, float]:
        return {"phase": float(self.phase)}

    def extra_state(self) -> dict[str, Any]:
        return {"phase": self.phase}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.phase = int(state.get("phase", 0))  # the frozen reflowed flow comes with the weights


class SlimFlowConfig(InstaFlowConfig):
    name: Literal["slimflow"] = "slimflow"  # type: ignore[assignment]
    anneal_fraction: float = Field(0.5, ge=0, le=1, description=(
        "share of the reflow phase over which the noise randomness beta anneals from 1 to 0"))
    anneal_schedule: Literal["linear", "cosine", "exp"] = "linear"
    guide_weight: float = Field(1.0, ge=0, description="weight of the flow-guided term in phase 2 (0: plain distillation)")
    guide_times: tuple[float, float] = Field((0.2, 0.8), description=(
        "range of t' of the flow-guided term's intermediate point"))

    @model_validator(mode="after")
    def _guide_times(self) -> SlimFlowConfig:
        lo, hi = self.guide_times
        if not 0 < lo <= hi < 1:
            raise ValueError(f"guide_times must satisfy 0 < low <= high < 1, got {self.guide_times}")
        return self


@METHODS.register("slimflow", summary="annealing reflow into a smaller student, then flow-guided one-step distillation",
                  paper="SlimFlow: Training Smaller One-Step Diffusion Models with Rectified Flow (Zhu et al., ECCV 2024)")
class SlimFlow(InstaFlow):
    """Zhu et al. 2024, for a student much smaller than the teacher (so it cannot start from
    the teacher's weights):

    - Annealing reflow (Sec. 4.1): phase 1 trains the small student from scratch on the
      teacher's couplings with the noise side perturbed, z' = sqrt(1 - beta²) z + beta eps
      (eps fresh), beta annealed from 1 (independent pairs: plain flow matching on the
      teacher's samples) to 0 (the teacher's coupling: reflow) over `anneal_fraction` of the
      phase, so the student first learns an easy flow and then straightens it.
    - Flow-guided distillation (Sec. 4.2): phase 2 freezes the small 2-rectified flow and
      trains the one-step student x^ = z - v_θ(z, 1) on the teacher's couplings,
      d(x^, Φ_teacher(z)), plus `guide_weight` times a term on fresh noise z: from the point
      x_t' = t' z + (1 - t') x^ of the student's own line (t' ~ U(guide_times), no gradient),
      one Euler step of the frozen 2-RF gives the target x_t' - t' v_2RF(x_t', t'), and
      d(x^, target) pulls the student along the 2-RF's flow.

    Implemented: both phases in one resumable run, linear / cosine / exponential annealing, the
    flow-guided term, L2 or pseudo-Huber distances. Not implemented: LPIPS, horizontal-flip
    augmentation of the pairs.
    """

    Config = SlimFlowConfig
    cfg: SlimFlowConfig

    def __init__(self, cfg: SlimFlowConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, total_steps: int = 2, **_: object) -> None:
        super().__init__(cfg, student, teacher, data, seed, total_steps)
        self.anneal_steps = cfg.anneal_fraction * self.switch_step

    def beta(self, step: int) -> float:
        """The noise randomness at `step` of phase 1: 1 -> 0 over `anneal_steps`."""
        if self.anneal_steps <= 0:
            return 0.0
        progress = min(1.0, step / self.anneal_steps)
        if self.cfg.anneal_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if self.cfg.anneal_schedule == "exp":
            return 0.0 if progress >= 1 else math.exp(-5 * progress)
        return 1 - progress

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        noise, labels = batch["noise"], self.labels(batch)
        if self.phase == 0:
            beta = self.beta(step)
            if beta > 0:
                noise = math.sqrt(1 - beta**2) * noise + beta * torch.randn_like(noise)
            return {"reflow": self.reflow_loss(batch, noise)}
        cfg = self.cfg
        losses = {"distill": regression_loss(self.one_step(noise, labels), batch["target"], cfg.loss, cfg.huber_c)}
        if cfg.guide_weight > 0:
            fresh = torch.randn_like(noise)
            fresh_labels = None if labels is None else torch.randint_like(labels, self.num_classes)
            pred = self.one_step(fresh, fresh_labels)
            with torch.no_grad():
                lo, hi = cfg.guide_times
                t = lo + (hi - lo) * torch.rand(len(fresh), device=fresh.device)
                t_b = t.view(-1, *([1] * (fresh.ndim - 1)))
                x_t = t_b * fresh + (1 - t_b) * pred
                target = x_t - t_b * self.reflowed.velocity(x_t, t, fresh_labels)
            losses["flow_guided"] = cfg.guide_weight * regression_loss(pred, target, cfg.loss, cfg.huber_c)
        return losses
