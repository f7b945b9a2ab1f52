"""Pairwise sample optimisation (Miao et al., ICLR 2025): fine-tune a timestep-distilled
few-step student on new target data without losing its few-step sampling (`pso`)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.teacher import denoising_loss
from distill.diffusion.samplers import sample, time_grid
from distill.errors import ConfigError
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class PSOConfig(MethodConfig):
    name: Literal["pso"] = "pso"
    student_steps: int | None = Field(None, ge=1, description=(
        "the distilled student's sampling steps (default: those its export was distilled for)"))
    beta: float = Field(0.1, gt=0, description=(
        "the DPO temperature: the scale of the likelihood-margin difference inside the sigmoid"))
    reference_samples: Literal["online", "offline"] = Field("online", description=(
        "online: the loser of each pair is the current student's own sample; offline: the frozen "
        "starting student's"))
    objective: Literal["pso", "diffusion"] = Field("pso", description=(
        "pso: the pairwise loss; diffusion: plain denoising fine-tuning on the target data (the "
        "baseline PSO improves on: it turns the few-step student back into a many-step model)"))


def denoising_error(model: Denoiser, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """Per-sample denoising loss (B,) of `model` at x_t = alpha_t x + sigma_t eps, in the
    model's own prediction space (its training loss): the surrogate of -log p(x) whose
    difference between two models Diffusion-DPO's margin compares."""
    return denoising_loss(model, x, None, t, eps)


def pairwise_margin_loss(student: Denoiser, reference: Denoiser, winner: Tensor, loser: Tensor,
                         t: Tensor, beta: float) -> Tensor:
    """-log sigmoid(-beta [(e_theta(w) - e_ref(w)) - (e_theta(l) - e_ref(l))]), averaged over the
    batch, with one noise and one time per pair (winner, loser: (B, ...), t: (B,)): the student
    gains likelihood on the winners relative to the frozen reference, and loses it on the
    losers (Diffusion-DPO's loss, Wallace et al. 2024, Eq. 14, as PSO uses it)."""
    eps = torch.randn_like(winner)
    with torch.no_grad():
        ref_w, ref_l = denoising_error(reference, winner, eps, t), denoising_error(reference, loser, eps, t)
    margin = (denoising_error(student, winner, eps, t) - ref_w) - (denoising_error(student, loser, eps, t) - ref_l)
    return -F.logsigmoid(-beta * margin).mean()


@METHODS.register("pso", summary="PSO: pairwise fine-tuning of a few-step student on new data, its own samples as references",
                  paper="Tuning Timestep-Distilled Diffusion Model Using Pairwise Sample Optimization (Miao et al., ICLR 2025)")
class PairwiseSampleOptimisation(Method):
    """Miao et al. 2025 (PSO). The teacher section names the timestep-distilled student to tune
    (e.g. `teacher: {name: recipe, config: dmd-flash-8gaussians.yaml, student: true}`); the
    student starts as a copy of it (`student.init: teacher`) and the frozen original is the
    reference model. Each step pairs a target training point (the winner) with a sample of the
    student's own K-step sampler (the loser: the current student's, `reference_samples:
    online`, or the frozen original's, `offline`), noises both with one noise at a time t drawn
    from the K step-start times the student is sampled at, and minimises the pairwise margin
    loss (`pairwise_margin_loss`): the target data's likelihood rises relative to the
    student's own samples', so its output distribution moves towards the data while the
    pairs keep the few-step behaviour the plain diffusion loss (`objective: diffusion`) loses.

    Implemented: online and offline reference samples; the diffusion-loss baseline. Not
    implemented: prompts (the toy students are unconditional, so every pair shares the one
    "prompt"), and preference data given as (winner, loser) pairs from elsewhere; the paper's
    code was not available here, so the likelihood surrogate (the x0 error at the student's
    own step times) follows Diffusion-DPO restricted to those times, as the paper describes.
    """

    Config = PSOConfig
    cfg: PSOConfig

    def __init__(self, cfg: PSOConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, teacher_meta: dict | None = None, **_: object) -> None:
        super().__init__()
        if student.conditional or teacher.conditional:
            raise ConfigError("pso tunes an unconditional few-step student; this one is class-conditional")
        steps = cfg.student_steps or (teacher_meta or {}).get("steps", [None])[0]
        if steps is None:
            raise ConfigError("pso needs the distilled student's sampling steps: set method.student_steps")
        self.cfg, self.student, self.teacher, self.steps = cfg, student, teacher, int(steps)  # teacher: the reference
        self.sampler = (teacher_meta or {}).get("sampler", "multistep")

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        winner = batch["x"]
        n = len(winner)
        if self.cfg.objective == "diffusion":
            t = torch.rand(n, device=winner.device)
            return {"denoising": denoising_loss(self.student, winner, None, t).mean()}
        model = self.student if self.cfg.reference_samples == "online" else self.teacher
        with torch.no_grad():
            loser = sample(model, torch.randn_like(winner), self.steps, self.sampler, seed=step)
        starts = time_grid(self.steps, winner.device)[:-1]
        t = starts[torch.randint(0, self.steps, (n,), device=winner.device)]
        return {"pso": pairwise_margin_loss(self.student, self.teacher, winner, loser, t, self.cfg.beta)}

    def student_steps(self) -> list[int]:
        return [self.steps]

    def student_sampler(self) -> str:
        return self.sampler
