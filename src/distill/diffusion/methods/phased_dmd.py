"""`dmd-phased`: few-step distribution matching where each sampling step is its own expert,
trained phase by phase, and each phase's fake score learns the score of *noisy* generator
outputs by score matching within the phase's subinterval."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.fake_score import build_fake_score
from distill.diffusion.methods.distribution_matching import (
    DMD2,
    DMD2Config,
    distribution_matching_loss,
)
from distill.diffusion.schedules import expand_time, flow_transition
from distill.errors import ConfigError
from distill.method import ParamGroup
from distill.models.experts import TimeExperts
from distill.registry import METHODS


class PhasedDMDConfig(DMD2Config):
    name: Literal["dmd-phased"] = "dmd-phased"  # type: ignore[assignment]
    phases: int = Field(2, ge=2, description=(
        "K: phases of the time axis, each with its own expert (student.experts must equal it) "
        "taking one Euler step from 1 - k/K to 1 - (k+1)/K"))
    phase_steps: list[int] | None = Field(None, description=(
        "trainer steps of each phase, trained in order (earlier experts then stay fixed); "
        "default: train.steps split equally"))
    student_steps: int | None = Field(None, description="sampling steps: always `phases` (one per expert)")
    margin: float = Field(0.02, gt=0, lt=0.5, description=(
        "the score comparison of a phase ending at s diffuses its outputs to t >= s + margin "
        "(sigma_{t|s} -> 0 at t = s)"))
    max_fake_weight: float = Field(10.0, gt=0, description=(
        "clamp of the 1 / sigma_{t|s}² weight of subinterval score matching (Eq. 13)"))

    @model_validator(mode="after")
    def _phases(self) -> PhasedDMDConfig:
        if self.student_steps not in (None, self.phases):
            raise ValueError(f"dmd-phased samples one step per phase: student_steps must equal "
                             f"phases ({self.phases}) or be left out")
        self.student_steps = self.phases
        if self.phase_steps is not None and len(self.phase_steps) != self.phases:
            raise ValueError(f"phase_steps has {len(self.phase_steps)} entries for {self.phases} phases")
        if self.gan_weight:
            raise ValueError("dmd-phased has no GAN head: set gan_weight: 0")
        first_end = 1 - 1 / self.phases
        if first_end + self.margin >= self.t_max:
            raise ValueError(f"the first phase ends at t = {first_end:.3f}, and its comparison times "
                             f"[{first_end:.3f} + margin {self.margin}, t_max {self.t_max}] are empty: "
                             "use fewer phases, a smaller margin or a larger t_max")
        return self


def diffuse_from(x_s: Tensor, s: Tensor, t: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """x_t ~ q(x_t | x_s) on the flow schedule (x_t = (1 - t) x0 + t eps), s < t:
    x_t = alpha_{t|s} x_s + sigma_{t|s} eps with alpha_{t|s} = (1 - t) / (1 - s) and
    sigma_{t|s}² = t² - alpha_{t|s}² s². Returns (x_t, sigma_{t|s} (B,))."""
    ratio, sigma = flow_transition(s, t)
    return expand_time(ratio, x_s) * x_s + expand_time(sigma, x_s) * eps, sigma


def subinterval_velocity_target(x_s: Tensor, eps: Tensor, s: Tensor, t: Tensor, sigma: Tensor) -> Tensor:
    """The unbiased velocity target of score matching within a subinterval (Phased DMD,
    Eq. 11): for x_t = diffuse_from(x_s, s, t, eps),
    v* = ((t + (1 - t) s² / (1 - s)²) / sigma_{t|s}) eps - x_s / (1 - s), whose regression
    optimum is the velocity of the diffused marginal of x_s; at s = 0 it is eps - x0."""
    scale = (t + (1 - t) * s**2 / (1 - s) ** 2) / sigma
    return expand_time(scale, eps) * eps - x_s / expand_time(1 - s, x_s)


@METHODS.register("dmd-phased", summary="Phased DMD: one expert per phase of the time axis, trained phase by phase with subinterval score matching",
                  paper="Phased DMD: Few-step Distribution Matching Distillation via Score Matching within Subintervals (Fan et al., 2025)")
class PhasedDMD(DMD2):
    """Fan et al. 2025 (Phased DMD). The time axis [0, 1] is split into K equal phases; the
    student is a mixture of K experts (`student.experts: K`, each initialised from the
    teacher), expert k taking one Euler step from t_k = 1 - k/K to s = t_{k+1}, so a K-step
    sample visits every expert once. Phases are trained in order (`phase_steps`): expert k's
    input x_{t_k} comes from running the earlier, now fixed, experts without gradient, and
    its output x_s is a *noisy* sample (clean only in the last phase).

    The distribution-matching gradient of phase k compares the teacher's and the phase's own
    fake score at x_t ~ q(x_t | x_s), t in [s + margin, t_max] (`diffuse_from`), with DMD's
    normaliser taken on the step's x0 estimate. The fake score of phase k (a teacher copy, one
    per phase) cannot regress x0, which noisy outputs do not carry: it is trained by score
    matching within the subinterval, regressing `subinterval_velocity_target` (Eq. 11) with
    weight min(1, max_fake_weight sigma_{t|s}²) (Eq. 13). In the last phase (s = 0) the
    generator's gradient is DMD's; its fake score keeps Eq. 13's weighting.

    Implemented: equal phases, one Euler step per expert, progressive training with earlier
    experts fixed, per-phase fake scores, the subinterval target and weighting, CFG on the
    teacher, `fake_updates` as in `dmd2`. With `lr_schedule: cosine` the later phases train at
    a decayed learning rate (the recipe uses a constant one). Not implemented: phases of several steps each
    (with stochastic gradient truncation inside a phase), LoRA experts, unequal boundaries.
    Needs a flow-matching (velocity) teacher.

    Key effect measured (8gaussians recipe, docs/methods.md#dmd-phased, BENCHMARKS.md): 2-step
    SWD 0.0997 against 0.1729 for `dmd2` with 2 steps of backward simulation and the same
    settings.
    """

    Config = PhasedDMDConfig
    cfg: PhasedDMDConfig

    def __init__(self, cfg: PhasedDMDConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, total_steps: int | None = None, **kwargs: object) -> None:
        if not isinstance(student.net, TimeExperts) or len(student.net.experts) != cfg.phases:
            have = len(student.net.experts) if isinstance(student.net, TimeExperts) else "no time"
            raise ConfigError(f"dmd-phased trains one expert per phase: set student.experts: {cfg.phases} "
                              f"(method.phases) with expert_routing: time (the student has {have} experts)")
        if (teacher.schedule.name, teacher.prediction) != ("flow", "velocity"):
            raise ConfigError("dmd-phased's subinterval score matching is written for a flow-matching "
                              f"teacher (schedule flow, prediction velocity); this one is "
                              f"{teacher.schedule.name}/{teacher.prediction}")
        super().__init__(cfg, student, teacher, data, seed, total_steps=total_steps, **kwargs)
        self.fakes = nn.ModuleList([self.fake, *(build_fake_score(teacher, cfg.fake_score)
                                                 for _ in range(cfg.phases - 1))])
        steps = cfg.phase_steps or self.equal_split(total_steps or cfg.phases, cfg.phases)
        self.phase_ends = torch.tensor(steps).cumsum(0).tolist()
        self.phase = 0
        short = [k for k, n in enumerate(steps) if n < cfg.fake_updates]
        if short:
            raise ConfigError(f"phases {short} get fewer trainer steps ({[steps[k] for k in short]}) than "
                              f"method.fake_updates={cfg.fake_updates}: their experts would never update; raise "
                              "train.steps or method.phase_steps")
        if total_steps is not None and self.phase_ends[-1] > total_steps:
            raise ConfigError(f"method.phase_steps sum to {self.phase_ends[-1]}, more than "
                              f"train.steps={total_steps}: the last phases would never train")

    @staticmethod
    def equal_split(total: int, parts: int) -> list[int]:
        return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]

    def phase_at(self, step: int) -> int:
        """The phase trained at a trainer step (the last phase after phase_steps run out)."""
        return next((k for k, end in enumerate(self.phase_ends) if step < end), self.cfg.phases - 1)

    def param_groups(self) -> list[ParamGroup]:
        k = self.cfg.fake_updates
        fakes = [p for p in self.fakes.parameters() if p.requires_grad]
        return [ParamGroup("fake_score", fakes, lr=self.cfg.fake_lr),
                ParamGroup("student", self.student.parameters(), every=k, offset=k - 1)]

    def step_logs(self) -> dict[str, float]:
        return {"phase": float(self.phase)}

    # ---------------------------------------------------------------- generator

    def boundaries(self, k: int, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(t_k, s = t_{k+1}) of phase k, each (n,)."""
        K = self.cfg.phases
        return (torch.full((n,), 1 - k / K, device=device), torch.full((n,), 1 - (k + 1) / K, device=device))

    def phase_output(self, k: int, n: int, labels: Tensor | None, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """(x_s, its x0 estimate, s) of expert k: the input x_{t_k} is made by the earlier
        experts' Euler steps without gradient, then expert k steps once (with gradient when
        grad is enabled)."""
        x = self.student.schedule.prior_scale() * torch.randn(n, *self.shape, device=device)
        with torch.no_grad():
            for j in range(k):
                t, s = self.boundaries(j, n, device)
                x = x + expand_time(s - t, x) * self.student.velocity(x, t, labels)
        t, s = self.boundaries(k, n, device)
        v = self.student.velocity(x, t, labels)
        return x + expand_time(s - t, x) * v, x - expand_time(t, x) * v, s

    def comparison_times(self, s: Tensor) -> Tensor:
        """t ~ U[max(s + margin, t_min), t_max] per row of s (n,)."""
        low = torch.maximum(s + self.cfg.margin, torch.full_like(s, self.cfg.t_min))
        return low + (self.cfg.t_max - low).clamp(min=0) * torch.rand_like(s)

    # ---------------------------------------------------------------- losses

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        self.phase = self.phase_at(step)
        return super().forward(batch, group, step)

    def fake_score_losses(self, batch: dict[str, Tensor], n: int, labels: Tensor | None,
                          device: torch.device) -> dict[str, Tensor]:
        """Score matching within (s, 1) of this phase's fake score on the expert's outputs x_s."""
        with torch.no_grad():
            x_s, _, s = self.phase_output(self.phase, n, labels, device)
        t = self.comparison_times(s)
        eps = torch.randn_like(x_s)
        x_t, sigma = diffuse_from(x_s, s, t, eps)
        target = subinterval_velocity_target(x_s, eps, s, t, sigma)
        error = (self.fakes[self.phase].velocity(x_t, t, labels) - target).pow(2).flatten(1).mean(1)
        weight = (self.cfg.max_fake_weight * sigma**2).clamp(max=1.0)
        return {"fake_subinterval": (weight * error).mean()}

    def generator_losses(self, batch: dict[str, Tensor], n: int, labels: Tensor | None,
                         device: torch.device) -> dict[str, Tensor]:
        x_s, x0_estimate, s = self.phase_output(self.phase, n, labels, device)
        t = self.comparison_times(s)
        with torch.no_grad():
            x_t, _ = diffuse_from(x_s, s, t, torch.randn_like(x_s))
            real_x0 = self.real_x0(x_t, t, labels)
            fake_x0 = self.fakes[self.phase].x0(x_t, t, labels)
        return {"distribution_matching": distribution_matching_loss(x_s, real_x0, fake_x0,
                                                                    anchor=x0_estimate.detach())}

    def student_sampler(self) -> str:
        return "euler"
