"""The embedding loss (`method.embedding_loss`): random frozen embedders, the differentiable
MMD², its wiring into dmd2, cd and ode-pairs, and its errors."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from distill.data.base import ArrayData
from distill.data.toy2d import TOY_CONFIGS
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.embedding_loss import EmbeddingLoss, EmbeddingLossConfig, mmd_median_rbf
from distill.diffusion.methods.consistency import (
    ConsistencyDistillation,
    MultistepConsistencyDistillation,
)
from distill.diffusion.methods.distribution_matching import DMD, DMD2, FDistill, SiD
from distill.diffusion.methods.ode_pairs import OdePairs
from distill.diffusion.methods.slam import SubpathLinearApproximation
from distill.diffusion.methods.tdm import TDM
from distill.errors import ConfigError
from distill.models.mlp import TimeMLP


def points(n: int = 64, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) + shift


def array_data(train: torch.Tensor) -> ArrayData:
    return ArrayData(name="test", train=train, test=train[:8])


def test_mmd_is_near_zero_on_one_distribution_and_grows_with_the_gap():
    same = mmd_median_rbf(points(256, seed=0), points(256, seed=1)).item()
    near = mmd_median_rbf(points(256, 0.5, seed=0), points(256, seed=1)).item()
    far = mmd_median_rbf(points(256, 2.0, seed=0), points(256, seed=1)).item()
    assert abs(same) < 0.02 < near < far


def test_the_loss_pulls_generated_samples_towards_the_data():
    loss = EmbeddingLoss(EmbeddingLossConfig(weight=1.0, networks=4), array_data(points(512)))
    generated = points(128, 3.0, seed=2).requires_grad_(True)
    optimiser = torch.optim.Adam([generated], lr=0.05)
    before = loss(generated, {"x": points(128, seed=3)}).item()
    for step in range(200):
        optimiser.zero_grad()
        loss(generated, {"x": points(128, seed=4 + step)}).backward()
        optimiser.step()
    after = loss(generated, {"x": points(128, seed=3)}).item()
    assert after < 0.2 * before
    assert generated.detach().mean(0).norm() < 1.5  # from |(3, 3)| = 4.2 towards the data's mean 0


def test_the_networks_are_frozen_seeded_and_leave_the_training_rng_alone():
    cfg = EmbeddingLossConfig(weight=1.0, networks=3, seed=5)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    a = EmbeddingLoss(cfg, array_data(points()))
    assert torch.equal(torch.rand(3), expected)
    b = EmbeddingLoss(cfg, array_data(points()))
    assert all(not p.requires_grad for p in a.parameters())
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    other = EmbeddingLoss(EmbeddingLossConfig(weight=1.0, networks=3, seed=6), array_data(points()))
    assert not torch.equal(next(a.parameters()), next(other.parameters()))
    a.train()
    assert not a.training


def test_images_are_embedded_and_batches_without_data_draw_training_rows():
    images = torch.rand(40, 1, 8, 8) * 2 - 1
    loss = EmbeddingLoss(EmbeddingLossConfig(weight=2.0, networks=3, width=8), array_data(images))
    generated = torch.zeros(6, 1, 8, 8, requires_grad=True)
    value = loss(generated, {"noise": torch.randn(6, 1, 8, 8)})  # a teacher-pair batch: no "x"
    value.backward()
    assert value.item() > 0 and generated.grad.abs().sum() > 0


def test_bad_input_is_refused_with_the_key_named():
    with pytest.raises(ConfigError, match="embedding_loss"):
        EmbeddingLoss(EmbeddingLossConfig(weight=1.0), array_data(torch.randn(8, 3, 4)))
    with pytest.raises(ValidationError, match="bandwidth"):
        EmbeddingLossConfig(weight=1.0, bandwidths=[0.5, 0.0])
    with pytest.raises(ValidationError):
        EmbeddingLossConfig(weight=1.0, netwroks=4)
    loss = EmbeddingLoss(EmbeddingLossConfig(weight=1.0, networks=1), array_data(points()))
    with pytest.raises(ValueError, match="built for samples"):
        loss(torch.randn(4, 3), {"x": torch.randn(4, 3)})


def small_denoiser(seed: int) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(TimeMLP((2,), hidden=16, depth=2, time_dim=8))


@pytest.mark.parametrize("method_cls", [DMD2, DMD, SiD, FDistill, TDM, ConsistencyDistillation,
                                        MultistepConsistencyDistillation, SubpathLinearApproximation, OdePairs])
def test_the_methods_add_the_loss_only_when_its_weight_is_set(method_cls):
    data = TOY_CONFIGS["8gaussians"](n=256, n_test=256).build()
    options = {"pairs": 64, "teacher_steps": 4} if method_cls in (OdePairs, DMD) else {}
    options |= {"subpath": False} if method_cls is SubpathLinearApproximation else {}

    def losses(weight: float) -> dict[str, torch.Tensor]:
        cfg = method_cls.Config(embedding_loss={"weight": weight, "networks": 2}, **options)
        method = method_cls(cfg, small_denoiser(0), small_denoiser(1), data=data)
        pairs = method.train_data() if hasattr(method, "train_data") else None
        source = pairs or {"x": data.train}
        batch = {k: v[:16] for k, v in source.items()}
        return method(batch, method.param_groups()[-1].name, 0)

    with_el = losses(1.0)
    assert "embedding" not in losses(0.0)
    assert with_el["embedding"].requires_grad and with_el["embedding"].item() > 0


def test_a_conditional_unet_generator_takes_the_loss_on_images():
    from distill.models.image import UNetConfig
    images = torch.rand(32, 1, 8, 8) * 2 - 1
    data = ArrayData(name="images", train=images, test=images[:8], train_labels=torch.arange(32) % 10,
                     test_labels=torch.arange(8), num_classes=10)
    make = UNetConfig(channels=[8, 16], norm_groups=8).make_denoiser
    method = DMD2(DMD2.Config(embedding_loss={"weight": 1.0, "networks": 3, "width": 8}),
                  make((1, 8, 8), 10), make((1, 8, 8), 10).requires_grad_(False), data)
    losses = method({"x": images[:8], "y": data.train_labels[:8]}, "student", 4)
    losses["embedding"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.parameters())
