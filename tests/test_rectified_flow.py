"""Rectified flow (`reflow`, `instaflow`, `slimflow`) and path straightness: the coupling
loss, the phases, the annealing, the data-free property, and a short run that resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.config import load_config
from distill.data.base import ArrayData
from distill.data.toy2d import TOY_CONFIGS
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.rectified_flow import InstaFlow, Reflow, SlimFlow, coupling_loss
from distill.diffusion.samplers import sample
from distill.diffusion.straightness import path_straightness
from distill.errors import ConfigError
from distill.models.mlp import TimeMLP
from distill.runner import run


class TimeVelocity(nn.Module):
    """A velocity field v(x, t) = scale * t for every coordinate (curved in time: paths bend)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x, t, cond=None):
        return self.scale * t.view(-1, 1).expand_as(x)


def mlp_denoiser(seed: int = 0, schedule: str = "flow") -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(TimeMLP((2,), hidden=16, depth=2, time_dim=8), schedule)


def data_free_toy() -> ArrayData:
    """8gaussians whose training split cannot be read (a meta tensor): any method that touches
    the data instead of the teacher's couplings fails."""
    data = TOY_CONFIGS["8gaussians"](n=256, n_test=256).build()
    data.train = torch.empty(data.train.shape, device="meta")
    return data


def test_straightness_is_zero_for_a_constant_velocity_and_the_velocity_variance_otherwise():
    noise = torch.randn(64, 2)
    assert path_straightness(Denoiser(TimeVelocity(0.0)), noise, steps=16) == pytest.approx(0, abs=1e-12)
    # v_i = 2 t_i with t_i = 1, 15/16, ..., 1/16: the variance of t over the grid is (N² - 1) / (12 N²)
    n = 16
    expected = 4 * (n * n - 1) / (12 * n * n)
    assert path_straightness(Denoiser(TimeVelocity(2.0)), noise, steps=n) == pytest.approx(expected, rel=1e-5)


def test_coupling_loss_is_flow_matching_on_the_fixed_coupling():
    student = mlp_denoiser()
    data, noise, t = torch.randn(8, 2), torch.randn(8, 2), torch.rand(8)
    x_t = (1 - t[:, None]) * data + t[:, None] * noise
    expected = (student(x_t, t) - (noise - data)).pow(2).mean()
    torch.testing.assert_close(coupling_loss(student, data, noise, t, None, "l2", 0.03), expected)
    huber = coupling_loss(student, data, noise, t, None, "pseudo-huber", 0.03)
    per_sample = (student(x_t, t) - (noise - data)).pow(2).sum(1)
    torch.testing.assert_close(huber, (torch.sqrt(per_sample + 0.03**2) - 0.03).mean())


def test_reflow_trains_on_the_teachers_couplings_without_reading_the_data():
    teacher = mlp_denoiser(1)
    method = Reflow(Reflow.Config(pairs=64, teacher_steps=8), mlp_denoiser(), teacher, data_free_toy())
    bank = method.train_data()
    torch.testing.assert_close(bank["target"], sample(teacher, bank["noise"], 8))
    assert torch.equal(bank["index"], torch.arange(64))
    loss = method(bank, "student", 0)["reflow"]
    loss.backward()
    assert all(p.grad is not None for p in method.student.parameters())


def test_reflow_needs_a_flow_student():
    with pytest.raises(ConfigError, match="student.schedule: flow"):
        Reflow(Reflow.Config(pairs=8), mlp_denoiser(schedule="vp-cosine"), mlp_denoiser(1), data_free_toy())


def test_instaflow_freezes_the_reflowed_flow_and_distils_its_own_solutions():
    cfg = InstaFlow.Config(pairs=32, teacher_steps=4, distill_teacher_steps=3, reflow_fraction=0.5)
    method = InstaFlow(cfg, mlp_denoiser(), mlp_denoiser(1), data_free_toy(), total_steps=10)
    bank = method.train_data()
    assert set(method(bank, "student", 0)) == {"reflow"}
    with torch.no_grad():
        next(method.student.parameters()).add_(0.1)  # phase 1 changed the student
    method.before_step(5)
    assert method.phase == 1 and method.extra_state() == {"phase": 1}
    for frozen, live in zip(method.reflowed.parameters(), method.student.parameters(), strict=True):
        assert torch.equal(frozen, live) and not frozen.requires_grad
    batch = {k: v[:8] for k, v in bank.items()}
    losses = method(batch, "student", 5)
    expected_target = sample(method.reflowed, bank["noise"][:8], 3)
    one_step = sample(method.student, bank["noise"][:8], 1)
    torch.testing.assert_close(losses["distill"], (one_step - expected_target).pow(2).mean())
    assert any(k.startswith("reflowed.") for k in method.checkpoint_state())


def test_slimflow_anneals_the_noise_then_adds_the_flow_guided_term():
    cfg = SlimFlow.Config(pairs=32, teacher_steps=4, reflow_fraction=0.5, anneal_fraction=0.5)
    method = SlimFlow(cfg, mlp_denoiser(), mlp_denoiser(1), data_free_toy(), total_steps=40)
    assert method.switch_step == 20 and method.anneal_steps == 10
    assert [method.beta(s) for s in (0, 5, 10, 15)] == [1.0, 0.5, 0.0, 0.0]
    bank = method.train_data()
    torch.manual_seed(0)
    annealed = method(bank, "student", 0)["reflow"]
    torch.manual_seed(0)
    coupled = method(bank, "student", 10)["reflow"]
    assert annealed != coupled  # beta = 1 replaces the coupling's noise, beta = 0 keeps it
    method.before_step(20)
    losses = method(bank, "student", 20)
    assert set(losses) == {"distill", "flow_guided"}
    sum(losses.values()).backward()
    assert all(p.grad is None for p in method.reflowed.parameters())
    method.cfg = method.cfg.model_copy(update={"guide_weight": 0.0})
    assert set(method(bank, "student", 21)) == {"distill"}


def test_slimflow_rejects_guide_times_outside_the_open_unit_interval():
    with pytest.raises(ValueError, match="guide_times"):
        SlimFlow.Config(guide_times=(0.0, 0.5))


def test_a_short_instaflow_run_resumes_in_phase_two_and_reports_straightness(tiny_trained_teacher: Path,
                                                                             tmp_path: Path):
    config = tmp_path / "instaflow.yaml"
    config.write_text(
        "name: tiny-instaflow\n"
        "data: {name: 8gaussians, n: 2048, n_test: 1024}\n"
        f"teacher: {{name: run, path: {tiny_trained_teacher}}}\n"
        "student: {name: mlp, hidden: 64, depth: 2, init: teacher}\n"
        "method: {name: instaflow, pairs: 512, teacher_steps: 8, distill_teacher_steps: 4}\n"
        "train: {steps: 12, batch_size: 64, lr: 1.0e-3, progress: false, checkpoint_every: 4}\n"
        "eval: {nfe: [1, 8], n_samples: 256, timing_repeats: 0, straightness: true}\n")
    run(load_config(config, ["train.steps=8"]), tmp_path / "run", evaluate=False)  # stops in phase 2
    result = run(load_config(config), tmp_path / "run")
    state = json.loads((result.run_dir / "eval.json").read_text())
    assert set(state["straightness"]) == {"teacher", "student"}
    assert "path straightness" in (result.run_dir / "report.html").read_text()
