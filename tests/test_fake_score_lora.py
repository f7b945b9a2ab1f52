"""The LoRA fake score (peft on the teacher's shared frozen weights), `vsd` and `f-distill`:
losses against hand-computed values, what trains, what is checkpointed, bad input, and a
resumed LoRA run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from distill.config import load_config
from distill.diffusion.fake_score import FakeScoreConfig, build_fake_score, lora_target_names
from distill.diffusion.methods.distribution_matching import (
    DMD2,
    VSD,
    FDistill,
    distribution_matching_loss,
    f_divergence_weight,
    variational_score_loss,
)
from distill.errors import ConfigError
from distill.runner import run
from test_distribution_matching import mlp_denoiser, toy_data


def test_lora_fake_score_starts_as_the_teacher_and_shares_its_frozen_weights():
    teacher = mlp_denoiser(1).requires_grad_(False)
    fake = build_fake_score(teacher, FakeScoreConfig(kind="lora", rank=4))
    x, t = torch.randn(8, 2), torch.rand(8)
    torch.testing.assert_close(fake(x, t), teacher(x, t))  # LoRA's B starts at zero
    trainable = {n for n, p in fake.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # the frozen weights are the teacher's own tensors: no second copy in memory
    teacher_pointers = {p.data_ptr() for p in teacher.parameters()}
    frozen = [p for p in fake.parameters() if not p.requires_grad]
    assert frozen and all(p.data_ptr() in teacher_pointers for p in frozen)
    # training the adapters leaves the teacher (and its module tree) untouched
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        for n, p in fake.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
    assert not torch.allclose(fake(x, t), teacher(x, t))
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert not any("lora" in name for name, _ in teacher.named_modules())


def test_a_wrong_lora_target_lists_the_adaptable_module_paths():
    net = mlp_denoiser().net
    assert [n for n in lora_target_names(net, "auto") if n.startswith("layers")] == ["layers.0", "layers.2", "layers.4"]
    with pytest.raises(ConfigError, match=r"method.fake_score.targets: \['nope', 'layers.1'\].*layers\.0, layers\.2"):
        lora_target_names(net, ["nope", "layers.1"])  # layers.1 exists but is an activation
    assert lora_target_names(net, ["layers.0"]) == ["layers.0"]
    with pytest.raises(ConfigError, match="fake_score.targets"):
        DMD2(DMD2.Config(fake_score={"kind": "lora", "targets": ["nope"]}), mlp_denoiser(), mlp_denoiser(1), toy_data())
    with pytest.raises(ValidationError, match="rank"):
        FakeScoreConfig(kind="lora", rank=0)


def test_dmd2_with_a_lora_fake_score_checkpoints_only_the_adapters():
    teacher = mlp_denoiser(1).requires_grad_(False)
    method = DMD2(DMD2.Config(fake_score={"kind": "lora", "rank": 4}), mlp_denoiser(), teacher, toy_data())
    fake_keys = [k for k in method.checkpoint_state() if k.startswith("fake.")]
    assert fake_keys and all("lora_" in k for k in fake_keys)
    fake_group = method.param_groups()[0]
    assert all(p.requires_grad for p in fake_group.parameters)
    lora_count = sum(p.numel() for p in fake_group.parameters)
    assert lora_count < sum(p.numel() for p in teacher.parameters())


def test_vsd_loss_gradient_is_the_weighted_eps_difference():
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    real, fake = torch.tensor([[0.5, 1.0], [0.0, 0.0]]), torch.tensor([[1.5, 1.0], [1.0, -2.0]])
    weight = torch.tensor([0.25, 0.04])  # sigma_t² at t = 0.5, 0.2 on the flow schedule
    variational_score_loss(x, real, fake, weight).backward()
    torch.testing.assert_close(x.grad, weight[:, None] * (real - fake) / 4)


def test_vsd_trains_the_generator_and_the_adapters_only():
    data = toy_data()
    teacher = mlp_denoiser(1).requires_grad_(False)
    method = VSD(VSD.Config(), mlp_denoiser(), teacher, data)
    assert method.cfg.fake_score.kind == "lora" and [g.every for g in method.param_groups()] == [1, 1]
    losses = method({"x": data.train[:32]}, "student", 0)
    assert set(losses) == {"variational_score"}
    losses["variational_score"].backward()
    assert all(p.grad is not None for p in method.student.parameters())
    assert all(p.grad is None for p in method.fake.parameters())
    fake_losses = method({"x": data.train[:32]}, "fake_score", 0)
    fake_losses["fake_denoising"].backward()
    assert all((p.grad is not None) == p.requires_grad for p in method.fake.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValidationError, match="no GAN head"):
        VSD.Config(gan_weight=0.1)


def test_f_divergence_weights_match_their_closed_forms():
    log_r = torch.tensor([-1.0, 0.0, 2.0])
    r = log_r.exp()
    torch.testing.assert_close(f_divergence_weight(log_r, "reverse-kl"), torch.ones(3))
    torch.testing.assert_close(f_divergence_weight(log_r, "forward-kl"), r)
    torch.testing.assert_close(f_divergence_weight(log_r, "js"), r / (1 + r))
    torch.testing.assert_close(f_divergence_weight(log_r, "hellinger"), r.sqrt() / 2)
    # h(r) = f''(r) r² checked numerically for JS: f(r) = r log r - (1 + r) log((1 + r) / 2)
    f = lambda v: v * math.log(v) - (1 + v) * math.log((1 + v) / 2)  # noqa: E731
    v, h = 1.7, 1e-4
    second = (f(v + h) - 2 * f(v) + f(v - h)) / h**2
    assert abs(second * v**2 - float(f_divergence_weight(torch.tensor([math.log(v)]), "js"))) < 1e-3
    with pytest.raises(ValueError, match="unknown f-divergence"):
        f_divergence_weight(log_r, "chi2")


def test_f_distill_weights_the_dmd_gradient_by_the_discriminators_ratio():
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    real, fake = torch.tensor([[0.5, 1.0], [0.0, 0.0]]), torch.tensor([[1.5, 1.0], [1.0, -2.0]])
    distribution_matching_loss(x, real, fake, torch.tensor([2.0, 0.0])).backward()
    assert x.grad[1].abs().sum() == 0 and x.grad[0].abs().sum() > 0
    data = toy_data()
    method = FDistill(FDistill.Config(divergence="forward-kl"), mlp_denoiser(), mlp_denoiser(1), data)
    assert method.head is not None  # the discriminator is always trained: its logit is log r
    assert set(method({"x": data.train[:32]}, "fake_score", 0)) == {"fake_denoising", "discriminator"}
    losses = method({"x": data.train[:32]}, "student", 4)
    assert set(losses) == {"distribution_matching"}
    losses["distribution_matching"].backward()
    assert all(p.grad is not None for p in method.student.parameters())
    assert all(p.grad is None for p in method.head.parameters())


def test_a_lora_dmd2_run_resumes_from_its_adapter_only_checkpoint(tiny_trained_teacher: Path, tmp_path: Path):
    config = tmp_path / "dmd2-lora.yaml"
    config.write_text(
        "name: tiny-dmd2-lora\n"
        "data: {name: 8gaussians, n: 2048, n_test: 1024}\n"
        f"teacher: {{name: run, path: {tiny_trained_teacher}}}\n"
        "student: {name: mlp, hidden: 64, depth: 2, init: teacher}\n"
        "method: {name: dmd2, fake_updates: 2, fake_score: {kind: lora, rank: 4}}\n"
        "train: {steps: 8, batch_size: 64, lr: 1.0e-3, progress: false, checkpoint_every: 4}\n"
        "eval: {nfe: [1], n_samples: 256, timing_repeats: 0}\n")
    first = run(load_config(config, ["train.steps=4"]), tmp_path / "run", evaluate=False)
    # the checkpoint holds only the adapters of the fake score; resuming must not call the
    # teacher's shared weights "missing"
    resumed = run(load_config(config), tmp_path / "run", evaluate=False)
    assert resumed.run_dir == first.run_dir
