"""`disback`: distribution backtracking. Before distillation, record how the teacher's score
degrades when it is fine-tuned on the initial generator's samples; then distil along that
path backwards, from the score nearest the generator to the teacher itself."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.distribution_matching import DMD2, DMD2Config, SiD
from distill.diffusion.methods.teacher import denoising_loss
from distill.errors import ConfigError
from distill.registry import METHODS


class DisBackConfig(DMD2Config):
    name: Literal["disback"] = "disback"  # type: ignore[assignment]
    fake_updates: int = Field(1, ge=1, description="fake-score updates per generator update")
    base: Literal["dmd2", "sid"] = Field("dmd2", description=(
        "the score distillation whose real score is backtracked: dmd2's distribution-matching "
        "gradient, or SiD's score-identity loss (alpha)"))
    alpha: float = Field(1.2, description="alpha of the SiD loss when base: sid")
    path_points: int = Field(4, ge=1, description=(
        "N: checkpoints recorded along the degradation path (the last one fits the initial "
        "generator; the teacher is the path's start)"))
    record_steps: int = Field(400, ge=1, description=(
        "steps of degradation recording: the teacher fine-tuned on the initial generator's samples"))
    record_lr: float = Field(1e-3, gt=0, description="learning rate of degradation recording (Adam)")
    record_batch_size: int = Field(256, ge=1, description="generator samples per recording step")
    backtrack_steps: int = Field(200, ge=1, description=(
        "trainer steps spent with each intermediate checkpoint as the target before moving one "
        "step back towards the teacher (the teacher is the target after N - 1 stages)"))

    @model_validator(mode="after")
    def _one_step(self) -> DisBackConfig:
        if self.student_steps != 1:
            raise ValueError("disback distils a one-step generator (student_steps: 1); use dmd2 "
                             "for multi-step students")
        if self.base == "sid" and self.gan_weight:
            raise ValueError("the SiD base has no GAN head: set gan_weight: 0 or base: dmd2")
        if self.path_points > self.record_steps:
            raise ValueError(f"path_points ({self.path_points}) cannot exceed record_steps "
                             f"({self.record_steps}): a checkpoint is kept at most once per step")
        return self


def record_degradation_path(teacher: Denoiser, samples: Callable[[torch.Generator], tuple[Tensor, Tensor | None]], steps: int,
                            points: int, lr: float, t_min: float, t_max: float, seed: int) -> list[dict[str, Tensor]]:
    """DisBack's degradation recording (Zhang et al. 2024, Sec. 3.2): a copy of the teacher
    is fitted by denoising regression to `samples(generator)`, batches (B, ...) of the initial
    generator with their class labels (B,) (None: unconditional), for `steps` Adam steps at
    t ~ U[t_min, t_max]; its weights are kept at `points` evenly spaced steps. Returns the N states [s_1, ..., s_N]; s_N fits the generator and the
    teacher (s_0) is the path's start."""
    degraded = copy.deepcopy(teacher).train().requires_grad_(True)
    optimizer = torch.optim.Adam(degraded.parameters(), lr=lr)
    keep = {round(steps * (i + 1) / points) for i in range(points)}
    generator = torch.Generator().manual_seed(seed)
    path = []
    for step in range(1, steps + 1):
        x, labels = samples(generator)
        t = t_min + (t_max - t_min) * torch.rand(len(x), generator=generator).to(x.device)
        eps = torch.randn(x.shape, generator=generator).to(x.device)
        loss = denoising_loss(degraded, x, labels, t, eps).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step in keep:
            path.append({k: v.detach().clone() for k, v in degraded.state_dict().items()})
    return path


@METHODS.register("disback", summary="DisBack: record the teacher's degradation towards the initial generator, then distil along it backwards",
                  paper="Distribution Backtracking Builds A Faster Convergence Trajectory for One-step Diffusion Distillation (Zhang et al., 2024)")
class DisBack(DMD2):
    """Zhang et al. 2024 (DisBack). Score distillation whose target score moves: at the start
    the generator G_0 (the teacher's weights or random ones: `student.init`) is far from the
    teacher's distribution, so the teacher's score at its samples is a poor guide ("score
    mismatch").

    Stage 1, degradation recording (`record_degradation_path`, before training): a copy of the
    teacher is fine-tuned on G_0's samples and N checkpoints s_1..s_N are kept; s_N scores
    G_0's distribution and the teacher is s_0. Stage 2, backtracking: the fake score starts
    from s_N (it already fits G_0), and the real score of the generator's loss (`dmd2`'s
    gradient, Eq. 7-8 of DMD, or SiD's loss) is s_{N-1} for the first `backtrack_steps` trainer
    steps, then s_{N-2}, ..., and the teacher s_0 from stage N on; the generator follows a path of
    intermediate distributions from its own towards the teacher's.

    Implemented: both stages, the checkpoint schedule on fixed trainer-step intervals, the
    fake score initialised at the path's end, and two score distillations to backtrack
    (`base`): `dmd2`'s gradient (its fake updates, CFG) or SiD's score-identity loss (`sid`'s,
    with the current target in the teacher's place). The path is recorded on the CPU before
    training and re-recorded (seeded, so identically with the same torch build) when a run is
    resumed, so it is not checkpointed; its N states stay in host memory. Not implemented: a
    convergence criterion for switching checkpoints (fixed intervals, as the released code);
    the GAN terms of the paper's SDXL code.

    Key effect (docs/methods.md#disback, BENCHMARKS.md), shown on SiD from random weights
    (`configs/toy2d/disback-sid-8gaussians.yaml`, gated): plain `sid`'s one-step generator is
    still collapsed after 2000 steps (1-step SWD 0.4414-0.4656, seeds 0-3) and needs
    3000-4000; backtracked, it has left the collapse by 2000 (0.1807-0.1881). With one path
    point (fake score fitted to the generator, the teacher as target at once) it stays
    collapsed (0.4607 / 0.4485), so the backtracking does it. On `dmd2` it does not show: from
    the teacher's weights not faster; from random weights `dmd2` leaves its collapse by 2000
    steps on its own (0.1661, backtracked 0.1817; at 3000 disback is ahead on 2 of 4 seeds);
    on digits slower (1-step FID 43.7 / 23.3 / 13.8 vs 24.7 / 17.0 / 12.9 at 250 / 500 / 1000
    trainer steps). Nor on digits with SiD: 1-step FID at 400 steps 102.7 vs `sid` 71.8 from
    the teacher's weights, 73.2 vs 52.4 from random ones (no collapse there to leave).
    """

    Config = DisBackConfig
    cfg: DisBackConfig
    frozen_modules = ("teacher", "target")

    def __init__(self, cfg: DisBackConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, **kwargs: object) -> None:
        if cfg.fake_score.kind != "copy":
            raise ConfigError("disback records full checkpoints of the teacher: set "
                              "method.fake_score.kind: copy (LoRA fake scores are not supported)")
        super().__init__(cfg, student, teacher, data, seed, **kwargs)
        device = next(teacher.parameters()).device

        def initial_samples(generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
            """A batch of the initial generator G_0's one-step samples (n, *shape), with the
            random class labels (n,) they were drawn for (None for an unconditional student)."""
            n = cfg.record_batch_size
            with torch.no_grad():
                z = torch.randn(n, *self.shape, generator=generator).to(device)
                labels = (torch.randint(0, self.student.num_classes, (n,), generator=generator).to(device)
                          if self.student.conditional else None)
                x = self.student.x0(self.student.schedule.prior_scale() * z, torch.ones(n, device=device), labels)
                return x, labels

        self.path = record_degradation_path(teacher, initial_samples, cfg.record_steps, cfg.path_points,
                                            cfg.record_lr, cfg.t_min, cfg.t_max, seed)
        self.fake.load_state_dict(self.path[-1])
        self.target = copy.deepcopy(teacher).requires_grad_(False).eval()
        self.stage = -1
        self.set_stage(0)

    def stage_at(self, step: int) -> int:
        """Backtracking stage i at a trainer step: the target is s_{N-1-i} (s_0 the teacher)."""
        return min(step // self.cfg.backtrack_steps, self.cfg.path_points - 1)

    def set_stage(self, stage: int) -> None:
        if stage == self.stage:
            return
        index = self.cfg.path_points - 1 - stage  # into [s_1..s_N] shifted: 0 is the teacher
        state = self.teacher.state_dict() if index == 0 else self.path[index - 1]
        self.target.load_state_dict(state)
        self.stage = stage

    def before_step(self, step: int) -> None:
        self.set_stage(self.stage_at(step))

    def step_logs(self) -> dict[str, float]:
        return {"backtrack_stage": float(self.stage)}

    def real_x0(self, x_t: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        return self.target.x0(x_t, t, labels, self.cfg.guidance)

    def generator_losses(self, batch: dict[str, Tensor], n: int, labels: Tensor | None,
                         device: torch.device) -> dict[str, Tensor]:
        """`dmd2`'s losses, or (base: sid) SiD's score-identity loss with the current target
        s_{N-1-stage} in the teacher's place."""
        if self.cfg.base == "dmd2":
            return super().generator_losses(batch, n, labels, device)
        return SiD.generator_losses(self, batch, n, labels, device)  # its real score is self.real_x0
