"""Sub-path Linear Approximation Model (`slam`): consistency distillation queried along the
linear sub-path between two adjacent points of the teacher's PF-ODE."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.consistency import ConsistencyConfig, ConsistencyDistillation
from distill.diffusion.schedules import Schedule, expand_time
from distill.errors import ConfigError
from distill.registry import METHODS


class SlamConfig(ConsistencyConfig):
    name: Literal["slam"] = "slam"  # type: ignore[assignment]
    subpath: bool = Field(True, description=(
        "train the student at a uniform point of the sub-path between x_{t_n} and the teacher's "
        "x^_{t_{n-1}} (SLAM); false: at x_{t_n} only, which is `cd`"))
    student_steps: int = Field(2, gt=0, description="multistep-sampler steps the student is evaluated at")


def subpath_point(schedule: Schedule, x_t: Tensor, t: Tensor, x_s: Tensor, s: Tensor, gamma: Tensor) -> Tensor:
    """The point at time tau = s + gamma (t - s) of the sub-path linear ODE through x_s (at s)
    and x_t (at t): the DDIM path x_tau = alpha_tau x0* + sigma_tau eps* with the (x0*, eps*)
    that put both points on it, i.e. the path along which DDIM's ODE (constant x0 and eps
    predictions) is exact. On the flow schedule it is the straight segment from x_s to x_t.
    x_t, x_s: (B, ...); t, s, gamma: (B,) with s < t."""
    a_t, sg_t = expand_time(schedule.alpha(t), x_t), expand_time(schedule.sigma(t), x_t)
    a_s, sg_s = expand_time(schedule.alpha(s), x_t), expand_time(schedule.sigma(s), x_t)
    det = a_t * sg_s - a_s * sg_t  # < 0: the signal-to-noise ratio falls from s to t
    x0 = (sg_s * x_t - sg_t * x_s) / det
    eps = (a_t * x_s - a_s * x_t) / det
    return schedule.add_noise(x0, eps, s + gamma * (t - s))


def subpath_jump(student: Denoiser, z: Tensor, t: Tensor, tau: Tensor, b: Tensor, labels: Tensor | None) -> Tensor:
    """The two-time student's DDIM jump to b from the sub-path point z (at time tau on the
    sub-path ending at t): its network is asked at (z, t) with tau as the second time (tau = t:
    on the PF-ODE itself, as every sampler asks it) and its output read at z's own noise level
    tau. z: (B, ...); t, tau, b: (B,)."""
    out = student.net(z, t, student.labels(labels, len(z), z.device), tau)
    x0, eps = student.schedule.to_x0_eps(z, tau, out, student.prediction)
    return student.schedule.add_noise(x0, eps, b)


@METHODS.register("slam", summary="consistency along the linear sub-path between adjacent teacher ODE points",
                  paper="Accelerating Image Generation with Sub-path Linear Approximation Model (Xu et al., ECCV 2024)")
class SubpathLinearApproximation(ConsistencyDistillation):
    """SLAM (Xu et al. 2024, Sec. 3.2-3.3, Alg. 1): the PF-ODE path is cut into sub-paths by
    the sampled points x_{t_n} (noised data) and x^_{t_{n-1}} (one teacher ODE step); each
    sub-path is approximated by a sub-path linear (SL) ODE, and the student, told where on it
    it is (gamma ~ U(0, 1)), is trained for consistency at that point: f_theta(x_{n,gamma},
    t_n, gamma) must match the EMA target's f_theta-(x^_{t_{n-1}}, t_{n-1}, gamma = 1). The
    loss grows with gamma from zero at the sub-path's near end to the plain consistency loss
    at its far end, a progressive, continuous estimate of the approximation error along the
    sub-path, where consistency distillation sees only the far end (`subpath: false`). Sampling
    is the multistep consistency sampler at gamma = 1.

    Implemented: the SL-ODE point, gamma as the student's second input, the consistency loss
    along the sub-path with cd's teacher step (Euler/Heun, CFG), EMA target, L2 or pseudo-Huber
    distance; the student starts from the teacher (a two-time network, zero weights on the new
    input). Adapted: the paper feeds gamma through the latent consistency UNet's
    guidance-embedding slot and rescales the interpolated point's noise level for VP
    schedules; here the SL-ODE is the DDIM path through the two points (straight on the flow
    schedule), gamma enters as the two-time network's second time tau = t_{n-1} + gamma (t_n -
    t_{n-1}) (tau = t_n at gamma = 1, where every sampler asks it), and the output is read at
    the point's own noise level tau. Not implemented: the latent-diffusion extras (guidance-
    scale embedding, LoRA) and EDM preconditioning of the student.
    """

    Config = SlamConfig
    cfg: SlamConfig

    def __init__(self, cfg: SlamConfig, student: Denoiser, teacher: Denoiser, **kwargs: object) -> None:
        super().__init__(cfg, student, teacher, **kwargs)
        if cfg.subpath and not student.two_time:
            raise ConfigError("slam tells its student where on the sub-path it is through a second time "
                              "input: set student.two_time: true (or method.subpath: false for plain cd)")
        if cfg.subpath and student.preconditioning != "none":
            raise ConfigError("slam reads its student's output at the sub-path point's own noise level, "
                              "which EDM preconditioning does not allow: set student.preconditioning: none")

    def student_jump(self, x_t: Tensor, t: Tensor, x_s: Tensor, s: Tensor, b: Tensor,
                     labels: Tensor | None) -> Tensor:
        if not self.cfg.subpath:
            return super().student_jump(x_t, t, x_s, s, b, labels)
        gamma = torch.rand_like(t).clamp(min=1e-3)  # tau > 0, where the student's x0 is defined
        tau = s + gamma * (t - s)
        return subpath_jump(self.student, subpath_point(self.student.schedule, x_t, t, x_s, s, gamma), t, tau, b, labels)

    def student_steps(self) -> list[int]:
        return sorted({1, 2, 4, self.cfg.student_steps})
