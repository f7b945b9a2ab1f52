"""`cd`: consistency distillation, a student that maps any point of a teacher ODE trajectory to
the trajectory's end in one evaluation."""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.ode_pairs import regression_loss
from distill.errors import ConfigError
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class ConsistencyConfig(MethodConfig):
    name: Literal["cd"] = "cd"
    intervals: int = Field(32, ge=2, description="N: the time axis [0, 1] cut into N equal steps")
    solver: Literal["euler", "heun"] = Field("heun", description="teacher ODE step between adjacent times")
    target_ema: float = Field(0.95, ge=0, lt=1, description=(
        "mu: the target network is an EMA of the student with this decay (0: the student "
        "itself without gradient, as in improved consistency training)"))
    loss: Literal["l2", "pseudo-huber"] = "l2"
    huber_c: float = Field(0.03, gt=0, description="c of the pseudo-Huber loss")
    guidance: float = Field(1.0, ge=0, description="CFG scale of the teacher step (1: none)")
    student_steps: int = Field(1, gt=0, description="multistep-sampler steps the student is evaluated at")


def ode_step(teacher: Denoiser, x_t: Tensor, t: Tensor, s: Tensor, solver: str,
             labels: Tensor | None, guidance: float) -> Tensor:
    """One step of the teacher's probability-flow ODE from t to s (both (B,)): Euler, or Heun
    (2nd order; Euler where s = 0, where the velocity of an x0 or eps network is undefined)."""
    dt = (s - t).view(-1, *([1] * (x_t.ndim - 1)))
    v = teacher.velocity(x_t, t, labels, guidance)
    x_euler = x_t + dt * v
    if solver == "euler":
        return x_euler
    v_next = teacher.velocity(x_euler, s.clamp(min=1e-4), labels, guidance)
    x_heun = x_t + dt * 0.5 * (v + v_next)
    return torch.where((s > 0).view_as(dt), x_heun, x_euler)


@METHODS.register("cd", summary="consistency distillation: the student maps any point of a teacher ODE path to its end",
                  paper="Consistency Models (Song et al., ICML 2023)")
class ConsistencyDistillation(Method):
    """Song et al. 2023, Algorithm 2: with t_n = n / N, x_{t_n} = alpha x0 + sigma eps from data,
    one teacher ODE step gives x^_{t_{n-1}}, and the loss is
    d(f_theta(x_{t_n}, t_n), f_theta-(x^_{t_{n-1}}, t_{n-1})), theta- = EMA_mu(theta) (Eq. 7-8).

    The consistency function is the student denoiser's x0 prediction: for every schedule with
    sigma(0) = 0 it is x itself at t = 0 (x0 = x_t - t v on the flow schedule), which is the
    paper's boundary condition f(x, 0) = x through c_skip/c_out (Eq. 5); with EDM
    preconditioning the denoiser applies Karras' c_skip/c_out as well. The target at
    t_{n-1} = 0 is x^_0 itself. Sampling is the multistep consistency sampler (Alg. 1).

    Implemented: the discretised CD loss with Euler or Heun teacher steps, EMA target with
    decay mu (0 gives iCT's stop-gradient target), L2 or pseudo-Huber (Song & Dhariwal
    2023) distance, CFG scale for class-conditional teachers, student initialised from the
    teacher (`student.init: teacher`, as in the paper). Not implemented: LPIPS (no
    perceptual network ships offline), the stochastic SDE step of SCott (option
    `stochastic` of the issue), iCT's N curriculum and log-normal n sampling.
    """

    Config = ConsistencyConfig

    def __init__(self, cfg: ConsistencyConfig, student: Denoiser, teacher: Denoiser, **_: object) -> None:
        super().__init__()
        if student.conditional != teacher.conditional:
            raise ConfigError("cd needs teacher and student to be both class-conditional or both not")
        self.cfg, self.student, self.teacher = cfg, student, teacher
        self.target = copy.deepcopy(student).eval().requires_grad_(False)

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        cfg, x0 = self.cfg, batch["x"]
        labels = batch.get("y") if self.student.conditional else None
        n = torch.randint(1, cfg.intervals + 1, (len(x0),), device=x0.device)
        t, s = n.float() / cfg.intervals, (n - 1).float() / cfg.intervals
        x_t = self.student.schedule.add_noise(x0, torch.randn_like(x0), t)
        with torch.no_grad():
            x_s = ode_step(self.teacher, x_t, t, s, cfg.solver, labels, cfg.guidance)
            at_data = (s == 0).view(-1, *([1] * (x0.ndim - 1)))
            target = torch.where(at_data, x_s, self.target.x0(x_s, s, labels))
        pred = self.student.x0(x_t, t, labels)
        return {"consistency": regression_loss(pred, target, cfg.loss, cfg.huber_c)}

    @torch.no_grad()
    def after_step(self, step: int, updated: list[str]) -> None:
        for target, online in zip(self.target.parameters(), self.student.parameters(), strict=True):
            target.lerp_(online, 1 - self.cfg.target_ema)

    def student_steps(self) -> list[int]:
        return [self.cfg.student_steps]

    def student_sampler(self) -> str:
        return "multistep"
