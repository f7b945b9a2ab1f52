"""PSO's pairwise margin loss, its objectives, the rotated toy target it is gated on, and the
recipe source that hands it a distilled student."""

from __future__ import annotations

import math

import pytest
import torch

from distill.data.toy2d import TOY_CONFIGS
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.pso import PairwiseSampleOptimisation as PSO
from distill.diffusion.methods.pso import denoising_error, pairwise_margin_loss
from distill.errors import ConfigError
from distill.models.mlp import TimeMLP
from distill.teachers import RecipeTeacher


def denoiser(seed: int) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(TimeMLP((2,), hidden=32, depth=3, time_dim=8, time_scale=1))


def test_the_margin_loss_is_log_two_at_the_reference_and_moves_likelihood_to_the_winners():
    reference = denoiser(0).requires_grad_(False)
    student = denoiser(0)
    winner, loser = torch.randn(128, 2) + 2.0, torch.randn(128, 2) - 2.0
    t = torch.full((128,), 0.5)
    torch.manual_seed(1)
    assert pairwise_margin_loss(student, reference, winner, loser, t, beta=5.0).item() == pytest.approx(math.log(2), abs=1e-5)
    optimiser = torch.optim.Adam(student.parameters(), lr=1e-3)
    for step in range(100):
        optimiser.zero_grad()
        torch.manual_seed(step)
        pairwise_margin_loss(student, reference, winner, loser, t, beta=5.0).backward()
        optimiser.step()
    eps = torch.randn_like(winner)
    with torch.no_grad():
        gain_w = denoising_error(reference, winner, eps, t) - denoising_error(student, winner, eps, t)
        gain_l = denoising_error(reference, loser, eps, t) - denoising_error(student, loser, eps, t)
    assert gain_w.mean() > 0 > gain_l.mean()  # better on the winners, worse on the losers


def test_pso_pairs_at_the_students_own_step_times_and_the_diffusion_objective_is_plain_denoising():
    data = TOY_CONFIGS["8gaussians"](n=256, n_test=64, rotate=22.5).build()
    batch = {"x": data.train[:32]}
    meta = {"steps": [4], "sampler": "multistep"}
    method = PSO(PSO.Config(), denoiser(1), denoiser(0).requires_grad_(False), data, teacher_meta=meta)
    assert method.student_steps() == [4] and method.student_sampler() == "multistep"
    losses = method(batch, "student", 0)
    assert set(losses) == {"pso"} and losses["pso"].requires_grad
    assert not any(k.startswith("teacher.") for k in method.checkpoint_state())  # the reference is rebuilt
    plain = PSO(PSO.Config(objective="diffusion"), denoiser(1), denoiser(0).requires_grad_(False), data,
                teacher_meta=meta)
    assert set(plain(batch, "student", 0)) == {"denoising"}
    with pytest.raises(ConfigError, match="student_steps"):
        PSO(PSO.Config(), denoiser(1), denoiser(0).requires_grad_(False), data, teacher_meta={})


def test_rotate_turns_points_and_modes_together():
    plain = TOY_CONFIGS["8gaussians"](n=64, n_test=16).build()
    turned = TOY_CONFIGS["8gaussians"](n=64, n_test=16, rotate=90).build()
    assert torch.allclose(turned.train.norm(dim=1), plain.train.norm(dim=1), atol=1e-5)
    assert torch.allclose(turned.modes[0], torch.tensor([0.0, 2.0]), atol=1e-5)  # (2, 0) -> (0, 2)
    assert torch.allclose(turned.train[:, 0], -plain.train[:, 1], atol=1e-5)


def test_a_student_recipe_is_refused_as_a_teacher_unless_asked_for(tmp_path):
    with pytest.raises(ConfigError, match="teacher.student: true"):
        RecipeTeacher(config="configs/toy2d/dmd2-8gaussians.yaml").load()
