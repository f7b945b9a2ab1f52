"""The realism reward model and `dmd-flash`: the timestep-aware split of DM and GAN losses,
the reward term's switch-on step, the RL-alone ablation, config errors and the eval column."""

from __future__ import annotations

import json

import pytest
import torch

from distill.config import load_config
from distill.data.toy2d import TOY_CONFIGS
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.flash_dmd import FlashDMD
from distill.diffusion.reward import RewardConfig, build_reward_model, mean_reward
from distill.models.mlp import TimeMLP
from distill.runner import run


def denoiser(seed: int) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(TimeMLP((2,), hidden=16, depth=3, time_dim=8, time_scale=1))


def toy_data():
    return TOY_CONFIGS["8gaussians"](n=512, n_test=256).build()


def flash(**cfg) -> FlashDMD:
    return FlashDMD(FlashDMD.Config(**cfg), denoiser(1), denoiser(0).requires_grad_(False), toy_data())


def test_the_realism_reward_scores_data_above_corrupted_data_and_is_reproducible():
    data = toy_data()
    cfg = RewardConfig(weight=1.0, train_steps=300, seed=3)
    state = torch.random.get_rng_state()
    model = build_reward_model(cfg, data)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream is untouched
    real = mean_reward(model, data.test)
    corrupted = mean_reward(model, data.test + 0.5 * torch.randn_like(data.test))
    assert real > corrupted + 1.0
    other = build_reward_model(cfg.model_copy(update={"seed": 4}), data)
    assert other is not model and build_reward_model(cfg, data) is model  # trained once per config
    x = data.test[:8].clone().requires_grad_(True)
    model(x).sum().backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is None for p in model.parameters())


def test_the_split_gives_high_noise_rows_to_distribution_matching_and_the_rest_to_the_gan():
    method = flash(split=0.5, gan_weight=1.0)
    with torch.no_grad():  # a fake score that differs from the teacher: a nonzero DM gradient
        for p in method.fake.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(64, 2, requires_grad=True)
    high = method.split_losses(x, torch.full((64,), 0.75), None)
    assert "gan" not in high and high["distribution_matching"].item() > 0
    low = method.split_losses(x, torch.full((64,), 0.25), None)
    assert low["gan"].item() > 0 and low["distribution_matching"].item() == 0
    low["distribution_matching"].backward()
    assert x.grad.abs().sum() == 0  # masked rows get no distribution-matching gradient


def test_the_reward_term_starts_at_its_step_and_rl_alone_drops_the_distillation_losses():
    batch = {"x": toy_data().train[:32]}
    method = flash(reward={"weight": 0.5, "start": 10, "train_steps": 100})
    assert "reward" not in method(batch, "student", 9)
    joint = method(batch, "student", 10)
    assert {"reward", "distribution_matching", "gan"} <= set(joint) and joint["reward"].requires_grad
    assert not any("reward" in k for k in method.checkpoint_state())  # rebuilt, never saved
    alone = flash(reward={"weight": 0.5, "start": 10, "train_steps": 100}, distill_during_rl=False)
    assert set(alone(batch, "student", 10)) == {"reward"}
    assert set(alone(batch, "student", 9)) == {"distribution_matching", "gan"}


def test_a_split_without_a_gan_is_refused():
    with pytest.raises(ValueError, match="gan_weight"):
        FlashDMD.Config(split=0.5, gan_weight=0)
    with pytest.raises(ValueError, match="one-step"):
        FlashDMD.Config(split=1.0, student_steps=1)
    FlashDMD.Config(split=0, gan_weight=0)  # distribution matching on every row: allowed


def test_a_reward_tuned_run_reports_each_rows_reward(tmp_path):
    cfg = load_config("configs/toy2d/dmd-flash-8gaussians.yaml", [
        "train.steps=10", "train.progress=false", "train.checkpoint_every=10", "eval.nfe=[4]",
        "eval.n_samples=256", "eval.timing_repeats=0", "method.reward.start=5",
        "method.reward.train_steps=50", "method.fake_updates=2"])
    run(cfg, tmp_path / "ok")
    rows = json.loads((tmp_path / "ok" / "eval.json").read_text())["rows"]
    assert all(isinstance(r["reward"], float) for r in rows) and {r["model"] for r in rows} == {"teacher", "student"}
