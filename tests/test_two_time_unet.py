"""The two-time UNet (`student: {name: unet, two_time: true}`): the embedding of t - s on top of
a diffusers UNet, for flow-map students (meanflow, flow-map, boot) on images."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from distill.diffusion.export import TIME_GAP_WEIGHTS, load_denoiser, save_denoiser
from distill.errors import CheckpointError, ConfigError
from distill.models.image import DiTConfig, UNetConfig

SHAPE = (1, 8, 8)


def unets(seed: int = 0):
    """(one-time config, one-time denoiser, two-time config, two-time denoiser from it)."""
    torch.manual_seed(seed)
    one_cfg = UNetConfig(channels=[8, 16], norm_groups=8)
    two_cfg = UNetConfig(channels=[8, 16], norm_groups=8, two_time=True)
    one = one_cfg.make_denoiser(SHAPE, 10)
    two = two_cfg.make_denoiser(SHAPE, 10)
    two.net.load_one_time_state(one.net.state_dict())
    return one_cfg, one, two_cfg, two


def perturb_gap(two) -> None:
    with torch.no_grad():
        for p in two.net.gap_embedding.parameters():
            p.add_(0.1 * torch.randn_like(p))


def test_a_two_time_unet_starts_as_its_one_time_teacher_for_every_s():
    _, one, _, two = unets()
    x, t, y = torch.randn(6, *SHAPE), torch.rand(6) * 0.9 + 0.1, torch.arange(6)
    s = t * torch.rand(6)
    assert two.two_time and not one.two_time
    torch.testing.assert_close(two.average_velocity(x, t, s, y), one.velocity(x, t, y))
    torch.testing.assert_close(two.velocity(x, t, y), one.velocity(x, t, y))


def test_the_gap_changes_the_jump_but_never_the_instantaneous_velocity():
    """After training (here: perturbed weights) u(x, t, s) depends on s, while u(x, t, t) is
    still exactly the UNet alone: the gap embedding is zero at s = t."""
    _, one, _, two = unets()
    perturb_gap(two)
    x, t, y = torch.randn(6, *SHAPE), torch.full((6,), 0.8), torch.arange(6)
    far, near = two.average_velocity(x, t, t * 0.1, y), two.average_velocity(x, t, t, y)
    assert (far - near).abs().max() > 1e-3
    torch.testing.assert_close(near, one.velocity(x, t, y), atol=1e-6, rtol=0)


def test_gradients_reach_the_gap_embedding_and_a_copy_uses_its_own():
    _, _, _, two = unets()
    x, t, y = torch.randn(4, *SHAPE), torch.full((4,), 0.9), torch.arange(4)
    two.average_velocity(x, t, t * 0.5, y).square().mean().backward()
    assert two.net.gap_embedding.mlp.linear_2.weight.grad.abs().sum() > 0
    shadow = copy.deepcopy(two)  # as the trainer's EMA copies the student
    perturb_gap(shadow)
    with torch.no_grad():
        ours, theirs = two.average_velocity(x, t, t * 0.5, y), shadow.average_velocity(x, t, t * 0.5, y)
    assert (ours - theirs).abs().max() > 1e-3  # the copy's hook adds the copy's embedding


def test_export_round_trip_and_the_unet_alone_is_the_s_equals_t_flow_model(tmp_path: Path):
    from diffusers import UNet2DModel

    _, one, two_cfg, two = unets()
    perturb_gap(two)
    out = save_denoiser(tmp_path / "student", two, two_cfg, SHAPE, steps=[1, 2], sampler="flow-map")
    assert (out / TIME_GAP_WEIGHTS).is_file()
    loaded, meta = load_denoiser(out)
    assert loaded.two_time and meta["model"]["two_time"]
    x, t, y = torch.randn(4, *SHAPE), torch.full((4,), 0.7), torch.arange(4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.average_velocity(x, t, t * 0.3, y), two.average_velocity(x, t, t * 0.3, y))
        unet = UNet2DModel.from_pretrained(out)
        plain = unet(x, t * 1000, class_labels=y).sample
    torch.testing.assert_close(plain, two.average_velocity(x, t, t, y).detach(), atol=1e-6, rtol=0)
    (out / TIME_GAP_WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match=TIME_GAP_WEIGHTS):
        load_denoiser(out)


def test_one_time_backbones_refuse_a_second_time():
    with pytest.raises(ConfigError, match="mlp or unet backbone"):
        DiTConfig(patch_size=2, layers=1, heads=1, head_dim=8, two_time=True).make_denoiser(SHAPE, 10)
    _, one, _, _ = unets()
    with pytest.raises(ValueError, match="takes one time"):
        one.net(torch.randn(2, *SHAPE), torch.ones(2), torch.arange(2), torch.zeros(2))
