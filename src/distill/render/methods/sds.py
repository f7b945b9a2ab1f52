"""Score distillation sampling into a parametric renderer (DreamFusion, Poole et al. 2023).

A frozen image diffusion teacher scores renders of a differentiable scene (here 2-D Gaussian
splats, `distill.render.splats`) for a prompted class. With x = g(θ) the render,
x_t = α_t x + σ_t ε, the SDS gradient (Eq. 3) is

    ∇_θ L_SDS = E_{t, ε}[ w(t) (ε̂_φ(x_t; y, t) − ε) ∂x/∂θ ],

the denoising loss's gradient with the U-Net Jacobian dropped. ε̂ is the teacher's
classifier-free-guided noise prediction (DreamFusion needs a large scale, 100 for Imagen:
without guidance the gradient follows the unconditional score and the prompt is ignored).
The loss returned is the usual surrogate ½‖x − sg[x − w(t)(ε̂ − ε)]‖², whose gradient in x is
exactly that term. w(t) = σ_t² (DreamFusion's choice, 1 − ᾱ_t on a VP schedule) or 1.

Implemented: the SDS gradient through the renderer, guidance, the time range t ∈ [t_min,
t_max] (DreamFusion: U[0.02, 0.98]), both weightings. Not implemented: NeRF, view sampling and
shading (the renderer is 2-D, one view: the teacher is an image model), and the Imagen
teacher (the teacher is the library's digits model).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS
from distill.render.splats import GaussianSplatsConfig
from distill.train.batches import Batch


class ScoreDistillationConfig(MethodConfig):
    """Options every render method shares."""

    guidance: float = Field(7.5, ge=1.0, description=(
        "classifier-free guidance scale of the teacher's noise prediction (1: none)"))
    t_min: float = Field(0.02, gt=0, lt=1)
    t_max: float = Field(0.98, gt=0, le=1)
    weighting: Literal["sigma2", "uniform"] = Field("sigma2", description=(
        "w(t): sigma2 = σ_t² (DreamFusion), uniform = 1"))
    prompts_per_step: int | None = Field(None, ge=1, description=(
        "prompts rendered and scored per step (a random subset; None: all)"))

    @model_validator(mode="after")
    def _range(self) -> ScoreDistillationConfig:
        if self.t_min >= self.t_max:
            raise ValueError(f"need t_min < t_max (got {self.t_min}, {self.t_max})")
        return self


def noise_renders(schedule: Any, x: Tensor, t_min: float, t_max: float) -> tuple[Tensor, Tensor, Tensor]:
    """(x_t, t, ε) for renders x (P, C, H, W): t ~ U[t_min, t_max], x_t = α_t x + σ_t ε."""
    t = t_min + (t_max - t_min) * torch.rand(len(x), device=x.device)
    eps = torch.randn_like(x)
    shape = (-1,) + (1,) * (x.dim() - 1)
    x_t = schedule.alpha(t).view(shape) * x + schedule.sigma(t).view(shape) * eps
    return x_t, t, eps


def distillation_surrogate(x: Tensor, gradient: Tensor) -> Tensor:
    """½‖x − sg[x − gradient]‖² summed per render, averaged over renders: its gradient in x
    is `gradient` (the SDS / VSD update through the renderer's Jacobian)."""
    target = (x - gradient).detach()
    return 0.5 * ((x - target) ** 2).flatten(1).sum(1).mean()


def time_weight(schedule: Any, t: Tensor, weighting: str, like: Tensor) -> Tensor:
    shape = (-1,) + (1,) * (like.dim() - 1)
    if weighting == "uniform":
        return torch.ones_like(t).view(shape)
    return (schedule.sigma(t) ** 2).view(shape)


class ScoreDistillationMethod(Method):
    """Shared base of the render methods: holds the renderer (the student, its parameters
    optimised), the frozen teacher, and the prompts rendered each step."""

    family = "render"
    Config = ScoreDistillationConfig
    renderers: ClassVar[tuple[type, ...]] = (GaussianSplatsConfig,)  # the student configs it optimises

    def __init__(self, cfg: ScoreDistillationConfig, student: Any, teacher: Any, **_: Any) -> None:
        super().__init__()
        self.cfg, self.student, self.teacher = cfg, student, teacher

    def prompts(self) -> Tensor | None:
        """Indices of the prompts rendered this step (None: all)."""
        count = self.cfg.prompts_per_step
        total = len(self.student.labels)
        if count is None or count >= total:
            return None
        return torch.randperm(total, device=self.student.labels.device)[:count]

    def render(self) -> tuple[Tensor, Tensor]:
        """(renders (P, C, H, W), their class labels (P,))."""
        index = self.prompts()
        labels = self.student.labels if index is None else self.student.labels[index]
        return self.student(index), labels

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("student", self.student.parameters())]


class SDSConfig(ScoreDistillationConfig):
    name: Literal["sds"] = "sds"


@METHODS.register("sds", summary="score distillation sampling: a renderer's parameters optimised by the "
                  "teacher's guided denoising gradient, no data",
                  paper="DreamFusion: Text-to-3D using 2D Diffusion (Poole et al., ICLR 2023)")
class SDS(ScoreDistillationMethod):
    Config = SDSConfig

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        x, labels = self.render()
        schedule = self.teacher.schedule
        x_t, t, eps = noise_renders(schedule, x, self.cfg.t_min, self.cfg.t_max)
        with torch.no_grad():
            eps_hat = self.teacher.eps(x_t.detach(), t, labels, guidance=self.cfg.guidance)
        gradient = time_weight(schedule, t, self.cfg.weighting, x) * (eps_hat - eps)
        return {"sds": distillation_surrogate(x, gradient)}
