"""`arcflow`: a few-step student whose every step is a curved, analytically integrated
trajectory (a momentum-mixture velocity policy), trained data-free by imitating the
teacher's velocity along its own rollouts."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.momentum_policy import MomentumPolicy
from distill.diffusion.schedules import expand_time
from distill.diffusion.teacher_pairs import prior_noise_rows
from distill.errors import ConfigError
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class ArcFlowConfig(MethodConfig):
    name: Literal["arcflow"] = "arcflow"
    student_steps: int = Field(2, gt=0, description="policy steps (NFE) the student is trained and exported at")
    intermediate_states: int = Field(4, gt=0, description=(
        "times per step at which the rolled-out policy's velocity is matched to the teacher's"))
    mixing_fraction: float = Field(0.2, ge=0, le=1, description=(
        "share of training over which the rollout between matched times hands over from the "
        "teacher's Euler steps (at the start) to the student's own policy (from then on)"))
    component_dropout: float = Field(0.1, ge=0, lt=1, description=(
        "probability of dropping each component from the rolled-out (detached) policy"))
    guidance: float = Field(1.0, ge=0, description="CFG scale of the teacher's velocity (1: none)")
    prior_samples: int = Field(50000, gt=0, description="noise rows the trainer batches from (the only inputs)")


def rollout_intervals(batch: int, states: int, span: float, teacher_ratio: float,
                      device: torch.device) -> tuple[Tensor, Tensor]:
    """How a step of length `span` is walked (ArcFlow's scheduled trajectory mixing): before
    matched state j the policy moves by student[:, j], after it the teacher by teacher[:, j]
    (both (B, states), sorted-uniform gaps). The student's gaps share (1 - ratio) of the span,
    the teacher's the rest, so ratio 1 walks a teacher trajectory and 0 the student's own."""
    cuts = torch.sort(torch.rand(batch, states, device=device), dim=1).values
    student = torch.diff(cuts, dim=1, prepend=torch.zeros(batch, 1, device=device)) * (1 - teacher_ratio) * span
    inner = torch.sort(torch.rand(batch, states - 1, device=device), dim=1).values
    teacher = torch.diff(inner, dim=1, prepend=torch.zeros(batch, 1, device=device),
                         append=torch.ones(batch, 1, device=device)) * teacher_ratio * span
    return student, teacher


@METHODS.register("arcflow", summary="few-step student with a curved, analytically integrated velocity per step (momentum mixture), imitating the teacher along its own rollouts",
                  paper="ArcFlow: Unleashing 2-Step Text-to-Image Generation via High-Precision Non-Linear Flow Distillation (2025)")
class ArcFlow(Method):
    """ArcFlow: the student, asked once per step at (x_src, t_src), outputs a momentum-mixture
    policy v(t) = sum_k w_k m_k exp(gamma_k (t_src - t)) (`momentum_policy.py`), which the
    sampler integrates in closed form to the next grid time: a non-linear trajectory within
    each step, where linear-shortcut students (`ode-pairs`, `progressive`) move along one
    straight velocity. Training is imitation on the student's own trajectory, data-free
    (prior noise only): each of the `student_steps` uniform steps starts where the student's
    (detached) previous step landed; inside it `intermediate_states` times t_a are sampled,
    the state x_a is reached by rolling out the detached policy (and, early in training,
    teacher Euler steps: `mixing_fraction`), and the policy's velocity there (its average
    over the teacher's move after t_a, where there is one) is regressed onto the teacher's
    velocity at (x_a, t_a), the teacher guided at scale `guidance`. The policy is trained
    where it actually goes, so errors are corrected rather than compounded.

    Implemented: the momentum-mixture parameterisation with K components (`student.
    policy_components`, the mlp backbone) and component 0 rate-free, the analytic integral,
    the rollout-and-match imitation objective with scheduled teacher/student mixing and
    component dropout on the rolled-out policy, means initialised from the teacher's output
    layer, uniform weights and spread rates (as the reference heads). Not implemented: the
    reference's LoRA adapters on a frozen teacher (the toy student is fully fine-tuned; the
    library's `peft` path is for diffusers backbones), its look-ahead window (the policy's
    average over a few substeps after t_a instead of its instantaneous velocity), its
    time-shifted (`shift`) step grid, and policy heads on the unet/dit backbones.
    """

    Config = ArcFlowConfig
    cfg: ArcFlowConfig

    def __init__(self, cfg: ArcFlowConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, total_steps: int = 1, **_: object) -> None:
        super().__init__()
        if not student.policy_components:
            raise ConfigError("arcflow's student outputs a momentum-mixture policy: set "
                              "student.policy_components (e.g. 8) on an mlp student, with student.init: teacher")
        if student.conditional != teacher.conditional:
            raise ConfigError("arcflow needs teacher and student to be both class-conditional or both not")
        self.cfg, self.student, self.teacher = cfg, student, teacher
        self.total_steps = total_steps
        self.num_classes = data.num_classes if student.conditional else None
        self._rows = prior_noise_rows(cfg.prior_samples, data.shape, self.num_classes, seed)

    def train_data(self) -> dict[str, Tensor]:
        return self._rows

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def teacher_ratio(self, step: int) -> float:
        """1 at the start, falling linearly to 0 after `mixing_fraction` of training."""
        horizon = self.cfg.mixing_fraction * self.total_steps
        return max(0.0, 1 - step / horizon) if horizon > 0 else 0.0

    def step_loss(self, policy: MomentumPolicy, x: Tensor, t_src: Tensor, span: float,
                  ratio: float, labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The imitation loss of one step's policy (asked at (x, t_src), both (B, ...) / (B,)),
        and where its detached rollout ends, (x_end, t_end) at t_src - span."""
        rolled = policy.detach().drop_components(self.cfg.component_dropout)
        student_gaps, teacher_gaps = rollout_intervals(len(x), self.cfg.intermediate_states, span, ratio, x.device)
        x_cur, t_cur = x, t_src
        losses = []
        for j in range(self.cfg.intermediate_states):
            t_a = (t_cur - student_gaps[:, j]).clamp(min=0)
            t_b = (t_a - teacher_gaps[:, j]).clamp(min=0)
            with torch.no_grad():
                x_a = rolled.advance(x_cur, t_cur, t_a)
                target = self.teacher.velocity(x_a, t_a, labels, self.cfg.guidance)
            moves = (t_a - t_b) > 1e-4
            if moves.any():
                pred = torch.where(expand_time(moves, x),
                                   policy.average_velocity(x_a, t_a, torch.where(moves, t_b, t_a - 1e-4)),
                                   policy.velocity(t_a))
            else:
                pred = policy.velocity(t_a)
            losses.append((pred - target).pow(2).flatten(1).mean(1))
            x_cur = x_a + expand_time(t_b - t_a, x) * target
            t_cur = t_b
        t_end = (t_src - span).clamp(min=0)
        with torch.no_grad():
            x_end = rolled.advance(x_cur, t_cur, t_end)
        return torch.stack(losses).mean(), x_end, t_end

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        labels = batch.get("y") if self.num_classes else None
        x = self.student.schedule.prior_scale() * batch["noise"]
        t = torch.ones(len(x), device=x.device, dtype=x.dtype)
        span, ratio = 1.0 / self.cfg.student_steps, self.teacher_ratio(step)
        total = x.new_zeros(())
        for _ in range(self.cfg.student_steps):
            policy = self.student.policy(x, t, labels)
            loss, x, t = self.step_loss(policy, x, t, span, ratio, labels)
            total = total + loss
        return {"imitation": total / self.cfg.student_steps}

    def student_steps(self) -> list[int]:
        return [self.cfg.student_steps]

    def student_sampler(self) -> str:
        return "arcflow"
