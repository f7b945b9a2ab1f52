"""Distribution matching (`dmd`, `dmd2`, `sid`): the generator loss, the update schedule, backward
simulation, the GAN head's hook point, and short runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from distill.config import load_config
from distill.data.base import ArrayData
from distill.data.toy2d import TOY_CONFIGS
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.discriminator import DiscriminatorHead, default_feature_path, norm_groups
from distill.diffusion.methods.distribution_matching import (
    DMD,
    DMD2,
    SiD,
    distribution_matching_loss,
    score_identity_loss,
)
from distill.errors import ConfigError
from distill.models.image import UNetConfig
from distill.models.mlp import TimeMLP
from distill.runner import run


def toy_data():
    return TOY_CONFIGS["8gaussians"](n=256, n_test=256).build()


def mlp_denoiser(seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(TimeMLP((2,), hidden=16, depth=2, time_dim=8))


def test_generator_loss_gradient_is_the_normalised_score_difference():
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    real = torch.tensor([[0.5, 1.0], [0.0, 0.0]])
    fake = torch.tensor([[1.5, 1.0], [1.0, -2.0]])
    distribution_matching_loss(x, real, fake).backward()
    weight = 1 / torch.tensor([[0.75], [0.5]])  # 1 / mean|x - real| per row
    # 0.5 mean((x - sg(x - g))²) over 4 elements has gradient g / 4
    torch.testing.assert_close(x.grad, (fake - real) * weight / 4, atol=1e-5, rtol=1e-5)


def test_score_identity_loss_value_and_gradient_paths():
    x = torch.tensor([[1.0, 2.0]], requires_grad=True)
    real = torch.tensor([[0.0, 1.0]], requires_grad=True)
    fake = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss = score_identity_loss(x, real, fake, alpha=1.2)
    # weight 1 / mean|x - real| = 1; d = real - fake = (-1, 1); (real - x) - 1.2 d = (0.2, -2.2)
    torch.testing.assert_close(loss, torch.tensor((-0.2 - 2.2) / 2))
    loss.backward()
    # unlike DMD, the loss differentiates through both x0 predictions (and so through x_t)
    assert real.grad.abs().sum() > 0 and fake.grad.abs().sum() > 0
    torch.testing.assert_close(x.grad, -(real - fake).detach() / 2)


def test_sid_generator_update_reaches_the_generator_through_the_teacher():
    data = toy_data()
    teacher = mlp_denoiser(1).requires_grad_(False)
    method = SiD(SiD.Config(), mlp_denoiser(), teacher, data)
    assert [g.every for g in method.param_groups()] == [1, 1]  # alternating, k = 1
    losses = method({"x": data.train[:32]}, "student", 0)
    assert set(losses) == {"score_identity"}
    losses["score_identity"].backward()
    assert all(p.grad is not None for p in method.student.parameters())
    with pytest.raises(ValidationError, match="no GAN head"):
        SiD.Config(gan_weight=0.1)


def test_fake_score_updates_k_times_per_generator_update():
    data = toy_data()
    method = DMD2(DMD2.Config(fake_updates=5), mlp_denoiser(), mlp_denoiser(1), data)
    fake, student = method.param_groups()
    due = [(fake.is_due(s), student.is_due(s)) for s in range(10)]
    assert [f for f, _ in due] == [True] * 10
    assert [s for _, s in due] == [False, False, False, False, True] * 2
    # the fake score starts as a trainable copy of the teacher, and is checkpointed
    assert torch.equal(method.fake.net.layers[0].weight, method.teacher.net.layers[0].weight)
    assert any(k.startswith("fake.") for k in method.checkpoint_state())


def test_generator_loss_trains_only_through_the_generator():
    data = toy_data()
    teacher = mlp_denoiser(1).requires_grad_(False)
    method = DMD2(DMD2.Config(), mlp_denoiser(), teacher, data)
    losses = method({"x": data.train[:32]}, "student", 4)
    sum(losses.values()).backward()
    assert set(losses) == {"distribution_matching"}
    assert all(p.grad is not None for p in method.student.parameters())
    assert all(p.grad is None for p in method.fake.parameters())
    fake_losses = method({"x": data.train[:32]}, "fake_score", 0)
    assert set(fake_losses) == {"fake_denoising"}


def test_backward_simulation_runs_the_generator_itself_to_make_its_inputs():
    data = toy_data()
    method = DMD2(DMD2.Config(student_steps=4), mlp_denoiser(), mlp_denoiser(1), data)
    calls = []
    method.student.net.register_forward_hook(lambda m, i, o: calls.append(i[1].unique().tolist()))
    x = method.generate(64, None, torch.device("cpu"))
    assert x.shape == (64, 2) and x.requires_grad
    # three no-grad denoise steps at t = 1, 0.75, 0.5, then one differentiable call at each row's t_k
    assert calls[:3] == [[1.0], [0.75], [0.5]] and set(calls[3]) <= {1.0, 0.75, 0.5, 0.25}
    assert method.student_steps() == [4] and method.student_sampler() == "multistep"


def test_gan_head_hooks_the_fake_score_and_a_wrong_path_lists_module_names():
    data = toy_data()
    assert default_feature_path(mlp_denoiser().net) == "layers.3"
    method = DMD2(DMD2.Config(gan_weight=0.1), mlp_denoiser(), mlp_denoiser(1), data)
    losses = method({"x": data.train[:32]}, "fake_score", 0)
    assert set(losses) == {"fake_denoising", "discriminator"}
    losses = method({"x": data.train[:32]}, "student", 4)
    assert set(losses) == {"distribution_matching", "gan"}
    assert any(k.startswith("head.") for k in method.checkpoint_state())
    with pytest.raises(ConfigError, match=r"no module at path 'nope'.*layers\.0"):
        DMD2(DMD2.Config(gan_weight=0.1, gan_feature="nope"), mlp_denoiser(), mlp_denoiser(1), data)

    class Bare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x, t, labels=None):
            return self.lin(x)

    with pytest.raises(ConfigError, match="no feature hook point.*lin"):
        DMD2(DMD2.Config(gan_weight=0.1), Denoiser(Bare()), Denoiser(Bare()), data)

    class Unflatten(Bare):  # its `lift` module outputs (B, 2, 1, 1, 1)
        def __init__(self) -> None:
            super().__init__()
            self.lift = nn.Unflatten(1, (2, 1, 1, 1))

        def forward(self, x, t, labels=None):
            return self.lift(self.lin(x)).flatten(1)

    with pytest.raises(ConfigError, match=r"gan_feature 'lift' outputs shape \(2, 2, 1, 1, 1\)"):
        DMD2(DMD2.Config(gan_weight=0.1, gan_feature="lift"), Denoiser(Unflatten()), Denoiser(Unflatten()), data)


def test_gan_head_on_a_class_conditional_unet_hooks_its_mid_block():
    """`gan_feature: auto` finds the diffusers UNet's mid block inside the DiffusersNet wrapper,
    and one generator and one fake-score step run on 8x8 images with labels."""
    teacher = UNetConfig(channels=[8, 16], norm_groups=8).make_denoiser((1, 8, 8), 10)
    student = UNetConfig(channels=[8, 16], norm_groups=8).make_denoiser((1, 8, 8), 10)
    assert default_feature_path(teacher.net) == "model.mid_block"
    data = ArrayData("digits", train=torch.randn(32, 1, 8, 8), test=torch.randn(8, 1, 8, 8),
                     train_labels=torch.arange(32) % 10, test_labels=torch.arange(8), num_classes=10)
    method = DMD2(DMD2.Config(gan_weight=0.01), student, teacher, data)
    assert method.head.spatial  # the mid block's (B, 16, 4, 4) maps go through the conv head
    batch = {"x": data.train[:8], "y": data.train_labels[:8]}
    assert set(method(batch, "fake_score", 0)) == {"fake_denoising", "discriminator"}
    losses = method(batch, "student", 4)
    assert set(losses) == {"distribution_matching", "gan"} and losses["gan"].requires_grad


def test_labels_drawn_for_an_unlabelled_batch_follow_the_batch_device():
    """A conditional student fed rows without labels gets random labels on the rows' device
    (a CPU draw would not mix with a CUDA batch); a labelled batch's labels are used as given."""
    teacher, student = (Denoiser(TimeMLP((2,), hidden=16, depth=2, time_dim=8, num_classes=3), num_classes=3)
                        for _ in range(2))
    method = DMD2(DMD2.Config(), student, teacher, toy_data())
    drawn = method.labels_for(5, {"x": torch.zeros(5, 2)}, torch.device("meta"))
    assert drawn.device.type == "meta" and drawn.shape == (5,)
    given = torch.tensor([2, 0, 1])
    assert torch.equal(method.labels_for(3, {"x": torch.zeros(3, 2), "y": given}), given)


def test_spatial_discriminator_head_separates_maps_with_equal_channel_means():
    """Real and fake feature maps that differ only in where the signal sits (same per-channel
    means) are separated by the conv head; a head that pooled the maps first could not."""
    torch.manual_seed(0)
    left = torch.zeros(64, 8, 4, 4)
    left[:, :, :, :2], left[:, :, :, 2:] = 1.0, -1.0
    maps = torch.cat([left, left.flip(-1)]) + 0.3 * torch.randn(128, 8, 4, 4)
    is_real = torch.cat([torch.ones(64), torch.zeros(64)])
    assert torch.allclose(maps[:64].mean((0, 2, 3)), maps[64:].mean((0, 2, 3)), atol=0.1)
    head = DiscriminatorHead(8, spatial=True)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(100):
        loss = F.binary_cross_entropy_with_logits(head(maps), is_real)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert ((head(maps) > 0).float() == is_real).float().mean() > 0.95
    with pytest.raises(ValueError, match=r"built for \(B, C, H, W\) feature maps, got shape \(4, 8\)"):
        head(torch.randn(4, 8))


def test_discriminator_head_never_normalises_single_values_and_reads_tokens():
    """Small bottlenecks (2x2 maps, strided to 1x1) keep >= 4 channels per GroupNorm group, so
    the logit still depends on the input (one channel per group would output the bias alone);
    token sequences (B, L, C) are averaged over their L tokens."""
    assert [norm_groups(c) for c in (4, 16, 32, 64, 256, 1280, 6)] == [1, 4, 8, 16, 32, 32, 1]
    head = DiscriminatorHead(32, spatial=True)
    assert head(torch.randn(16, 32, 2, 2)).std() > 1e-3
    tokens = torch.randn(4, 10, 24)
    assert DiscriminatorHead.feature_channels(tokens) == 24
    head = DiscriminatorHead(24, spatial=False)
    assert torch.allclose(head(tokens), head(tokens.mean(1)))


def test_options_are_validated():
    with pytest.raises(ValidationError, match="one-step generator"):
        DMD.Config(student_steps=2)
    with pytest.raises(ValidationError, match="GAN head is part of dmd2"):
        DMD.Config(gan_weight=0.1)
    with pytest.raises(ValidationError, match="t_min"):
        DMD2.Config(t_min=0.5, t_max=0.4)
    with pytest.raises(ValidationError, match="fake_updates"):
        DMD2.Config(fake_updates=0)
    with pytest.raises(ConfigError, match=r"train.steps=3 with method.fake_updates=5 never updates the generator"):
        DMD2(DMD2.Config(fake_updates=5), mlp_denoiser(), mlp_denoiser(1), toy_data(), total_steps=3)


def test_a_short_dmd2_run_with_the_gan_head_beats_the_teacher_at_one_step(tiny_trained_teacher: Path, tmp_path: Path):
    """The whole path through the runner (the `dmd` path is run by its gate)."""
    config = tmp_path / "dmd2.yaml"
    config.write_text(
        "name: tiny-dmd2\n"
        "data: {name: 8gaussians, n: 4096, n_test: 2048}\n"
        f"teacher: {{name: run, path: {tiny_trained_teacher}}}\n"
        "student: {name: mlp, hidden: 64, depth: 2, init: teacher}\n"
        "method: {name: dmd2, fake_updates: 2, gan_weight: 0.01}\n"
        "train: {steps: 400, batch_size: 256, lr: 1.0e-3, progress: false}\n"
        "eval: {nfe: [1], n_samples: 1000, timing_repeats: 0}\n")
    result = run(load_config(config), tmp_path / "dmd2")
    rows = {(r["model"], r["nfe"]): r for r in json.loads((result.run_dir / "eval.json").read_text())["rows"]}
    assert rows["student", 1]["swd"] < 0.5 * rows["teacher", 1]["swd"], rows
