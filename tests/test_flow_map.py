"""Flow maps (`meanflow`, `flow-map`): the two-time backbone, its start from a one-time teacher,
the flow-map sampler, and the MeanFlow and Lagrangian targets checked on a flow with a known
average velocity."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from distill.config import load_config
from distill.data.toy2d import TOY_CONFIGS
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.flow_map import Boot, FlowMapDistillation, MeanFlow
from distill.diffusion.samplers import sample
from distill.errors import ConfigError
from distill.models.mlp import MLPConfig, TimeMLP
from distill.runner import run

RATE = 0.7  # the linear teacher flow dx/dt = RATE x


class LinearFlow(nn.Module):
    """Velocity RATE x: the flow from t to s is x_s = x_t exp(RATE (s - t))."""

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return RATE * x


class ExactAverageVelocity(nn.Module):
    """u(x, t, s) = x (1 - exp(RATE (s - t))) / (t - s), the linear flow's average velocity
    (its limit RATE x at s = t), times `scale` (scale != 1 is a wrong flow map)."""

    two_time = True

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None, s: Tensor | None = None) -> Tensor:
        gap = (t - (t if s is None else s)).view(-1, 1)
        safe = torch.where(gap.abs() < 1e-6, torch.ones_like(gap), gap)
        ratio = torch.where(gap.abs() < 1e-6, RATE * torch.ones_like(gap),
                            -torch.expm1(-RATE * safe) / safe)
        return self.scale * x * ratio


def toy_data():
    return TOY_CONFIGS["8gaussians"](n=256, n_test=256).build()


@pytest.mark.parametrize("tangent", ["jvp", "finite-difference"])
def test_meanflow_loss_vanishes_at_the_true_average_velocity(tangent):
    cfg = MeanFlow.Config(tangent=tangent, adaptive_power=0.0, flow_ratio=0.0,
                          time_sampling={"kind": "uniform"}, fd_step=1e-4)
    batch = {"x": torch.randn(256, 2)}
    torch.manual_seed(0)
    exact = MeanFlow(cfg, Denoiser(ExactAverageVelocity()), Denoiser(LinearFlow()), toy_data())
    loss = exact(batch, "student", 0)["meanflow"]
    torch.manual_seed(0)
    wrong = MeanFlow(cfg, Denoiser(ExactAverageVelocity(1.2)), Denoiser(LinearFlow()), toy_data())
    assert loss < 1e-6 and wrong(batch, "student", 0)["meanflow"] > 1e-3


def test_the_flow_map_sampler_jumps_with_the_average_velocity():
    student = Denoiser(ExactAverageVelocity())
    noise = torch.randn(16, 2)
    # one jump from t = 1 to 0 lands exactly where the linear flow goes: x exp(-RATE)
    torch.testing.assert_close(sample(student, noise, 1, "flow-map"), noise * math.exp(-RATE))
    torch.testing.assert_close(sample(student, noise, 3, "flow-map"), noise * math.exp(-RATE))


def test_a_two_time_mlp_starts_as_its_one_time_teacher():
    torch.manual_seed(0)
    teacher = TimeMLP((2,), hidden=16, depth=2, time_dim=8)
    student = TimeMLP((2,), hidden=16, depth=2, time_dim=8, two_time=True)
    student.load_one_time_state(teacher.state_dict())
    x, t = torch.randn(5, 2), torch.rand(5)
    for s in (t, torch.zeros(5), None):
        torch.testing.assert_close(student(x, t, None, s), teacher(x, t))
    with pytest.raises(ValueError, match="two_time"):
        teacher(x, t, None, t)


def test_meanflow_needs_a_two_time_student_and_two_time_needs_a_flow_velocity_backbone():
    one_time = Denoiser(TimeMLP((2,), hidden=8, depth=1, time_dim=8))
    with pytest.raises(ConfigError, match="student.two_time: true"):
        MeanFlow(MeanFlow.Config(), one_time, Denoiser(LinearFlow()), toy_data())
    with pytest.raises(ValueError, match="two_time"):
        MLPConfig(two_time=True, schedule="vp-cosine")


def test_a_short_meanflow_run_starts_from_the_teacher_and_exports_a_flow_map_student(
        tiny_trained_teacher: Path, tmp_path: Path):
    config = tmp_path / "meanflow.yaml"
    config.write_text(
        "name: tiny-meanflow\n"
        "data: {name: 8gaussians, n: 2048, n_test: 1024}\n"
        f"teacher: {{name: run, path: {tiny_trained_teacher}}}\n"
        "student: {name: mlp, hidden: 64, depth: 2, init: teacher, two_time: true}\n"
        "method: {name: meanflow, student_steps: [1, 2]}\n"
        "train: {steps: 4, batch_size: 64, lr: 1.0e-3, progress: false, checkpoint_every: 4}\n"
        "eval: {nfe: [1, 2], n_samples: 256, timing_repeats: 0}\n")
    result = run(load_config(config), tmp_path / "run")
    rows = {(r["model"], r["nfe"]): r for r in result.rows}
    assert rows["student", 1]["sampler"] == "flow-map"
    # four small steps from the teacher's weights: the 1-step flow map is still near the
    # teacher's own 1-step Euler sample
    assert rows["student", 1]["swd"] == pytest.approx(rows["teacher", 1]["swd"], rel=0.3)


def test_the_data_free_flow_map_reads_prior_noise_only_and_its_target_vanishes_at_the_true_map():
    data = toy_data()
    data.train = torch.empty(data.train.shape, device="meta")  # any read of the data fails
    cfg = FlowMapDistillation.Config(prior_samples=128, adaptive_power=0.0, fd_step=1e-4, flow_ratio=0.0)
    exact = FlowMapDistillation(cfg, Denoiser(ExactAverageVelocity()), Denoiser(LinearFlow()), data)
    rows = exact.train_data()
    assert set(rows) == {"noise"} and rows["noise"].shape == (128, 2)
    torch.manual_seed(0)
    assert exact(rows, "student", 0)["lagrangian"] < 1e-6
    wrong = FlowMapDistillation(cfg, Denoiser(ExactAverageVelocity(0.8)), Denoiser(LinearFlow()), data)
    torch.manual_seed(0)
    assert wrong(rows, "student", 0)["lagrangian"] > 1e-3
    jvp = FlowMapDistillation(cfg.model_copy(update={"tangent": "jvp"}), Denoiser(ExactAverageVelocity()),
                              Denoiser(LinearFlow()), data)
    torch.manual_seed(0)
    assert jvp(rows, "student", 0)["lagrangian"] < 1e-6


def test_two_time_is_refused_by_a_backbone_that_takes_one_time():
    from distill.models.image import DiTConfig

    with pytest.raises(ConfigError, match="two_time"):
        DiTConfig(two_time=True).make_denoiser((1, 8, 8), None)


def test_boot_bootstraps_one_teacher_step_from_noise_only():
    data = toy_data()
    data.train = torch.empty(data.train.shape, device="meta")  # any read of the data fails
    cfg = Boot.Config(prior_samples=128, delta=1e-3, solver="heun")
    exact = Boot(cfg, Denoiser(ExactAverageVelocity()), Denoiser(LinearFlow()), data)
    rows = exact.train_data()
    noise = rows["noise"]
    # the boundary G(eps, 1) = eps holds by construction; G(eps, t) follows the linear flow
    torch.testing.assert_close(exact.jump(noise, torch.ones(128), None), noise)
    torch.testing.assert_close(exact.jump(noise, torch.full((128,), 0.5), None), noise * math.exp(-0.5 * RATE))
    torch.manual_seed(0)
    small = exact(rows, "student", 0)["bootstrap"]
    wrong = Boot(cfg, Denoiser(ExactAverageVelocity(1.2)), Denoiser(LinearFlow()), data)
    torch.manual_seed(0)
    assert small < 1e-6 < wrong(rows, "student", 0)["bootstrap"]
