"""`teacher`: train a flow-matching model from data (the teacher later runs distil)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from distill.diffusion.denoiser import Denoiser
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS


class FlowMatchingConfig(MethodConfig):
    name: Literal["teacher"] = "teacher"
    time_sampling: Literal["uniform", "logit-normal"] = "uniform"


def sample_time(n: int, kind: str, device: torch.device) -> Tensor:
    """t: (n,) in (0, 1): uniform, or logit-normal (Esser et al. 2024, SD3) for 'logit-normal'."""
    if kind == "logit-normal":
        return torch.sigmoid(torch.randn(n, device=device))
    return torch.rand(n, device=device)


@METHODS.register("teacher", summary="train a flow-matching teacher on data (velocity regression)",
                  paper="Flow Matching for Generative Modeling (Lipman et al., 2023)")
class FlowMatching(Method):
    """Conditional flow matching (Lipman et al. 2023, Eq. 23; rectified flow, Liu et al. 2023):
    x_t = (1 - t) x0 + t eps and the network regresses the velocity eps - x0 (or the
    equivalent x0 / eps target for other prediction types), so sampling is an ODE solve."""

    Config = FlowMatchingConfig
    needs_teacher = False

    def __init__(self, cfg: FlowMatchingConfig, student: Denoiser, **_: object) -> None:
        super().__init__()
        self.cfg, self.student = cfg, student

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]

    def forward(self, batch: Tensor, group: str, step: int) -> dict[str, Tensor]:
        x0 = batch
        eps = torch.randn_like(x0)
        t = sample_time(len(x0), self.cfg.time_sampling, x0.device)
        schedule = self.student.schedule
        x_t = schedule.add_noise(x0, eps, t)
        target = schedule.convert(x_t, t, schedule.velocity_target(x0, eps, t), "velocity",
                                  self.student.prediction)
        return {"flow_matching": (self.student(x_t, t) - target).pow(2).mean()}
