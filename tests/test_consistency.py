"""Consistency distillation (`cd`): the teacher ODE step, the EMA target, and a short run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.config import load_config
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.consistency import (
    ConsistencyDistillation,
    MultistepConsistencyDistillation,
    SegmentedConsistencyDistillation,
    ode_step,
    segment_start,
)
from distill.diffusion.samplers import ddim_step
from distill.runner import run


class LinearVelocity(nn.Module):
    """v(x, t) = a x + b t: a field whose Euler and Heun steps are known in closed form."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x, t, labels=None):
        return self.a * x + self.b * t.view(-1, 1)


def test_teacher_steps_are_euler_and_heun_and_euler_into_t_zero():
    teacher = Denoiser(LinearVelocity(0.5, 2.0))
    x, t, s = torch.tensor([[1.0, -2.0]]), torch.tensor([0.75]), torch.tensor([0.5])
    v = 0.5 * x + 2.0 * 0.75
    x_euler = x - 0.25 * v
    torch.testing.assert_close(ode_step(teacher, x, t, s, "euler", None, 1.0), x_euler)
    v_next = 0.5 * x_euler + 2.0 * 0.5
    torch.testing.assert_close(ode_step(teacher, x, t, s, "heun", None, 1.0), x - 0.25 * 0.5 * (v + v_next))
    zero = torch.tensor([0.0])
    torch.testing.assert_close(ode_step(teacher, x, t, zero, "heun", None, 1.0),
                               ode_step(teacher, x, t, zero, "euler", None, 1.0))


def test_target_network_is_an_ema_of_the_student_and_is_checkpointed():
    student, teacher = Denoiser(nn.Linear(2, 2)), Denoiser(LinearVelocity(0.0, 0.0))
    method = ConsistencyDistillation(ConsistencyDistillation.Config(target_ema=0.9), student, teacher)
    before = method.target.net.weight.clone()
    with torch.no_grad():
        student.net.weight.add_(1.0)
    method.after_step(0, ["student"])
    torch.testing.assert_close(method.target.net.weight, 0.9 * before + 0.1 * student.net.weight)
    assert any(k.startswith("target.") for k in method.checkpoint_state())
    assert not any(k.startswith("teacher.") for k in method.checkpoint_state())


def test_a_short_cd_run_beats_the_teacher_at_one_step(tiny_trained_teacher: Path, tmp_path: Path):
    config = tmp_path / "cd.yaml"
    config.write_text(
        "name: tiny-cd\n"
        "data: {name: 8gaussians, n: 4096, n_test: 2048}\n"
        f"teacher: {{name: run, path: {tiny_trained_teacher}}}\n"
        "student: {name: mlp, hidden: 64, depth: 2, init: teacher}\n"
        "method: {name: cd, intervals: 16, solver: heun}\n"
        "train: {steps: 400, batch_size: 256, lr: 3.0e-4, ema_decay: 0.99, progress: false}\n"
        "eval: {nfe: [1], n_samples: 1000, timing_repeats: 0}\n")
    result = run(load_config(config), tmp_path / "cd")
    rows = {(r["model"], r["nfe"]): r for r in json.loads((result.run_dir / "eval.json").read_text())["rows"]}
    assert rows["student", 1]["swd"] < 0.5 * rows["teacher", 1]["swd"], rows
    # timing_repeats: 0 skips timing; the report still renders
    assert "ms_per_sample" not in rows["student", 1] and (result.run_dir / "report.html").is_file()


def test_segments_start_where_the_time_axis_is_cut():
    n = torch.arange(1, 9)
    assert segment_start(n, 8, 1).tolist() == [0] * 8
    assert segment_start(n, 8, 2).tolist() == [0, 0, 0, 0, 4, 4, 4, 4]
    assert segment_start(n, 8, 8).tolist() == list(range(8))


def test_one_segment_is_plain_consistency_distillation():
    teacher = Denoiser(LinearVelocity(0.5, 1.0))

    def loss(method_cls, **options):
        net = Denoiser(DenoiserNet())
        net.load_state_dict(reference.state_dict())
        method = method_cls(method_cls.Config(intervals=8, **options), net, teacher)
        torch.manual_seed(0)
        return method({"x": torch.randn(16, 2)}, "student", 0)["consistency"]

    class DenoiserNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x, t, labels=None):
            return self.lin(torch.cat([x, t.view(-1, 1)], 1))

    reference = Denoiser(DenoiserNet())
    cd = loss(ConsistencyDistillation)
    torch.testing.assert_close(loss(MultistepConsistencyDistillation, segments=1), cd)
    assert not torch.allclose(loss(MultistepConsistencyDistillation, segments=4), cd)


def test_segment_options_are_checked_and_tscd_phases_shrink():
    with pytest.raises(ValueError, match=r"intervals \(32\) must be a multiple of segments \(3\)"):
        MultistepConsistencyDistillation.Config(segments=3)
    with pytest.raises(ValueError, match="must not increase"):
        SegmentedConsistencyDistillation.Config(segments=[2, 4])
    with pytest.raises(ValueError, match=r"must divide intervals \(32\); got \[3\]"):
        SegmentedConsistencyDistillation.Config(segments=[4, 3])
    teacher, student = Denoiser(LinearVelocity(0.0, 0.0)), Denoiser(nn.Linear(2, 2))
    tscd = SegmentedConsistencyDistillation(SegmentedConsistencyDistillation.Config(), student, teacher,
                                            total_steps=8)
    assert [tscd.segments(step) for step in range(8)] == [8, 8, 4, 4, 2, 2, 1, 1]
    assert tscd.student_steps() == [1]
    mcd = MultistepConsistencyDistillation(MultistepConsistencyDistillation.Config(segments=4), student, teacher)
    assert mcd.student_steps() == [1, 2, 4] and mcd.student_sampler() == "ddim"
    eight = MultistepConsistencyDistillation.Config(segments=8)
    assert MultistepConsistencyDistillation(eight, student, teacher).student_steps() == [1, 2, 4, 8]


def test_stochastic_teacher_step_is_ddim_with_fresh_noise():
    teacher = Denoiser(LinearVelocity(0.5, 1.0))
    x, t, s = torch.randn(64, 2), torch.full((64,), 0.75), torch.full((64,), 0.5)
    x0 = teacher.x0(x, t)
    eps = (x - 0.25 * x0) / 0.75
    torch.testing.assert_close(ddim_step(teacher, x, t, s), 0.5 * x0 + 0.5 * eps)
    # flow schedule (alpha = 1 - t, sigma = t, SNR = ((1 - t) / t)²): at t = 0.75 -> s = 0.5,
    # c = eta sigma_s sqrt(1 - SNR_t / SNR_s) = 0.5 sqrt(8 / 9)
    torch.manual_seed(0)
    noisy = ddim_step(teacher, x, t, s, eta=1.0)
    torch.manual_seed(0)
    z = torch.randn_like(x)
    c = 0.5 * (8 / 9) ** 0.5
    torch.testing.assert_close(noisy, 0.5 * x0 + (0.25 - c * c) ** 0.5 * eps + c * z)


def test_sampler_eta_is_the_students_ddim_noise_strength_and_is_exported(tiny_trained_teacher: Path, tmp_path: Path):
    teacher = Denoiser(LinearVelocity(-1.0, 0.0))
    student = Denoiser(LinearVelocity(-1.0, 0.0))
    cd, mcd = ConsistencyDistillation, MultistepConsistencyDistillation
    assert (cd(cd.Config(), student, teacher).student_sampler(), cd(cd.Config(), student, teacher).student_eta()) == ("multistep", 0.0)
    assert mcd(mcd.Config(), student, teacher).student_sampler() == "ddim"
    controlled = cd(cd.Config(sampler_eta=0.3), student, teacher)
    assert (controlled.student_sampler(), controlled.student_eta()) == ("ddim", 0.3)
    config = tmp_path / "cd.yaml"
    config.write_text(
        "name: tiny-cd-eta\n"
        "data: {name: 8gaussians, n: 1024, n_test: 512}\n"
        f"teacher: {{name: run, path: {tiny_trained_teacher}}}\n"
        "student: {name: mlp, hidden: 64, depth: 2, init: teacher}\n"
        "method: {name: cd, intervals: 16, student_steps: 2, sampler_eta: 0.3}\n"
        "train: {steps: 20, batch_size: 64, progress: false}\n"
        "eval: {nfe: [2], n_samples: 500, timing_repeats: 0}\n")
    result = run(load_config(config), tmp_path / "cd-eta")
    meta = json.loads((result.run_dir / "student" / "distill.json").read_text())
    assert (meta["sampler"], meta["eta"]) == ("ddim", 0.3)
    rows = json.loads((result.run_dir / "eval.json").read_text())["rows"]
    assert any(r["model"] == "student" and r.get("eta") == 0.3 for r in rows), rows


def test_trajectory_states_never_read_the_data_and_lie_on_the_teachers_path():
    """MLCM's states: x_{t_n} is the teacher's ODE from prior noise; for the field v = x the
    exact solution from x_1 at t = 1 is x_t = x_1 exp(t - 1), which 16 Heun steps meet."""
    from distill.data.toy2d import TOY_CONFIGS
    from distill.diffusion.methods.consistency import teacher_trajectory_state

    data = TOY_CONFIGS["8gaussians"](n=64, n_test=16).build()
    data.train = torch.empty(data.train.shape, device="meta")  # any read of the data fails
    teacher = Denoiser(LinearVelocity(1.0, 0.0))
    method = ConsistencyDistillation(ConsistencyDistillation.Config(states="trajectory", prior_samples=32),
                                     Denoiser(LinearVelocity(1.0, 0.0)), teacher, data=data)
    rows = method.train_data()
    assert set(rows) == {"noise"} and rows["noise"].shape == (32, 2)
    end = torch.full((32,), 0.25)
    state = teacher_trajectory_state(teacher, rows["noise"], end, 16, None, 1.0)
    torch.testing.assert_close(state, rows["noise"] * math.exp(0.25 - 1), atol=1e-3, rtol=1e-3)
    assert method(rows, "student", 0)["consistency"].isfinite()
