"""LADD's adversarial term on `scm` (`method.adversarial`): a head on the frozen teacher's
features, hinge losses, the student's one-step samples as fakes, and its errors."""

from __future__ import annotations

import pytest
import torch

from distill.data.toy2d import TOY_CONFIGS
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.ladd import AdversarialConfig, TeacherDiscriminator
from distill.diffusion.methods.scm import ContinuousConsistencyDistillation as SCM
from distill.errors import ConfigError
from distill.models.mlp import TimeMLP


def denoiser(seed: int) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(TimeMLP((2,), hidden=16, depth=3, time_dim=8, time_scale=1))


def toy_data():
    return TOY_CONFIGS["8gaussians"](n=256, n_test=64).build()


def test_the_head_learns_to_tell_data_from_shifted_samples_through_the_frozen_teacher():
    teacher = denoiser(0).requires_grad_(False)
    disc = TeacherDiscriminator(AdversarialConfig(weight=1.0, t_max=0.2), teacher, (2,))
    assert disc.path == "layers.5" and not any(k.startswith("_teacher") for k in disc.state_dict())
    optimiser = torch.optim.Adam(disc.head.parameters(), lr=1e-2)
    real, fake = torch.randn(256, 2), torch.randn(256, 2) + 3.0
    before = disc.discriminator_loss(fake, real, None, None).item()
    for _ in range(200):
        optimiser.zero_grad()
        disc.discriminator_loss(fake, real, None, None).backward()
        optimiser.step()
    assert disc.discriminator_loss(fake, real, None, None).item() < 0.5 * before
    moved = fake.clone().requires_grad_(True)
    disc.generator_loss(moved, None).backward()  # the generator's gradient reaches its samples
    assert moved.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_scm_adds_the_term_and_a_discriminator_group_only_when_its_weight_is_set():
    data = toy_data()
    plain = SCM(SCM.Config(), denoiser(1), denoiser(0).requires_grad_(False), data)
    assert [g.name for g in plain.param_groups()] == ["student"] and plain.discriminator is None
    method = SCM(SCM.Config(adversarial={"weight": 0.5, "lr": 1e-3}), denoiser(1),
                 denoiser(0).requires_grad_(False), data)
    groups = method.param_groups()
    assert [g.name for g in groups] == ["student", "discriminator"] and groups[1].lr == 1e-3
    assert any(k.startswith("discriminator.head.") for k in method.state_dict())
    batch = {"x": data.train[:32]}
    student_losses = method(batch, "student", 0)
    assert set(student_losses) == {"scm", "adversarial"} and student_losses["adversarial"].requires_grad
    disc_loss = method(batch, "discriminator", 0)["discriminator"]
    disc_loss.backward()
    assert all(p.grad is None for p in method.student.parameters())  # fakes are detached


def test_bad_adversarial_settings_are_refused_with_the_key_named():
    data = toy_data()
    with pytest.raises(ConfigError, match="pairs: trajectory"):
        SCM(SCM.Config(pairs="trajectory", adversarial={"weight": 0.5}), denoiser(1), denoiser(0), data)
    with pytest.raises(ConfigError, match="the teacher .*method.adversarial.feature.*layers.0"):
        SCM(SCM.Config(adversarial={"weight": 0.5, "feature": "nope"}), denoiser(1), denoiser(0), data)
    with pytest.raises(ValueError, match="t_min"):
        AdversarialConfig(weight=1.0, t_min=0.5, t_max=0.4)
