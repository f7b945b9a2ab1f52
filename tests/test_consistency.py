"""Consistency distillation (`cd`): the teacher ODE step, the EMA target, and a short run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import tiny_teacher_yaml
from distill.config import load_config
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.consistency import ConsistencyDistillation, ode_step
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


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cd-teacher")
    run(load_config(tiny_teacher_yaml(root / "teacher.yaml", steps=600)), root / "run", evaluate=False)
    return root / "run"


def test_a_short_cd_run_beats_the_teacher_at_one_step(tiny_teacher: Path, tmp_path: Path):
    config = tmp_path / "cd.yaml"
    config.write_text(
        "name: tiny-cd\n"
        "data: {name: 8gaussians, n: 4096, n_test: 2048}\n"
        f"teacher: {{name: run, path: {tiny_teacher}}}\n"
        "student: {name: mlp, hidden: 64, depth: 2, init: teacher}\n"
        "method: {name: cd, intervals: 16, solver: heun}\n"
        "train: {steps: 400, batch_size: 256, lr: 3.0e-4, ema_decay: 0.99, progress: false}\n"
        "eval: {nfe: [1], n_samples: 1000, timing_repeats: 1}\n")
    result = run(load_config(config), tmp_path / "cd")
    rows = {(r["model"], r["nfe"]): r for r in json.loads((result.run_dir / "eval.json").read_text())["rows"]}
    assert rows["student", 1]["swd"] < 0.5 * rows["teacher", 1]["swd"], rows
