"""`mdt`: velocity matching and velocity distillation vanish where the student is the exact
transport of a straight flow; the distillation term trains the one-step map."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from distill.data.toy2d import TOY_CONFIGS
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.mdt import MDT
from distill.errors import ConfigError
from distill.models.mlp import TimeMLP


class PointMassFlow(nn.Module):
    """The exact velocity (x - c) / t of the flow to a point mass c: straight paths, so the
    average velocity from t to 0 equals it."""

    def __init__(self, c: Tensor) -> None:
        super().__init__()
        self.c = nn.Parameter(c.clone())

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return (x - self.c) / t[:, None]


def test_both_terms_vanish_at_the_exact_transport():
    data = TOY_CONFIGS["8gaussians"](n=256, n_test=256).build()
    c = torch.tensor([0.5, -1.0])
    teacher = Denoiser(PointMassFlow(c)).requires_grad_(False)
    method = MDT(MDT.Config(), Denoiser(PointMassFlow(c)), teacher, data)
    losses = method({"x": c.expand(64, 2).clone()}, "student", 0)
    assert set(losses) == {"velocity_matching", "velocity_distillation"}
    for name, value in losses.items():
        assert value.item() < 1e-8, (name, value)


def test_velocity_distillation_reaches_the_one_step_map():
    data = TOY_CONFIGS["8gaussians"](n=256, n_test=256).build()
    torch.manual_seed(0)
    teacher = Denoiser(TimeMLP((2,), hidden=16, depth=2, time_dim=8)).requires_grad_(False)
    student = Denoiser(TimeMLP((2,), hidden=16, depth=2, time_dim=8))
    method = MDT(MDT.Config(vd_weight=1.0), student, teacher, data)
    losses = method({"x": data.train[:32]}, "student", 0)
    losses["velocity_distillation"].backward()
    assert all(p.grad is not None for p in student.parameters())
    assert method.student_steps() == [1, 2] and method.student_sampler() == "euler"
    with pytest.raises(ConfigError, match="prediction: velocity"):
        MDT(MDT.Config(), Denoiser(TimeMLP((2,), 8, 1, 4), prediction="x0"), teacher, data)
