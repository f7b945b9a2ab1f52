"""Continuous-time consistency distillation (`scm`): the TrigFlow frame of a flow teacher, and
sCM's tangent checked on Gaussian data, where the teacher's flow and the exact consistency
function are known in closed form."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from distill.config import load_config
from distill.data.toy2d import TOY_CONFIGS
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.scm import ContinuousConsistencyDistillation as SCM
from distill.diffusion.task import build_student
from distill.diffusion.trigflow import from_schedule, theta_of_time, to_schedule, trig_velocity
from distill.errors import ConfigError, ModelMismatchError
from distill.models.mlp import MLPConfig, TimeMLP
from distill.runner import run

SCALE = 1.7  # the data is N(0, SCALE² I)


class GaussianFlow(nn.Module):
    """The exact flow-matching velocity of N(0, SCALE²) data: with v_s = (1 - s)² c² + s²,
    E[x0 | x_s] = (1 - s) c² x_s / v_s and E[eps | x_s] = s x_s / v_s."""

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        s = t.view(-1, 1)
        var = (1 - s) ** 2 * SCALE**2 + s**2
        return (s - (1 - s) * SCALE**2) * x / var


class GaussianConsistency(nn.Module):
    """A flow-velocity network whose x0 prediction is the end of the Gaussian flow's ODE path
    through x_s, x0 = c x_s / sqrt(v_s) (the ODE keeps x_s / sqrt(v_s) fixed), times
    1 + `wobble` s (wobble != 0: a prediction that changes along the path, not a consistency
    function)."""

    def __init__(self, wobble: float = 0.0) -> None:
        super().__init__()
        self.wobble = nn.Parameter(torch.tensor(wobble))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        s = t.view(-1, 1)
        x0 = (1 + self.wobble * s) * SCALE * x / ((1 - s) ** 2 * SCALE**2 + s**2).sqrt()
        return (x - x0) / s  # v = eps - x0 with eps = (x - (1 - s) x0) / s


def gaussian_data():
    data = TOY_CONFIGS["8gaussians"](n=256, n_test=256).build()
    data.train = SCALE * torch.randn(256, 2)
    return data


def test_the_trigflow_frame_is_the_flow_schedule_rescaled():
    teacher = Denoiser(GaussianFlow())
    s = torch.tensor([0.05, 0.3, 0.5, 0.9, 1.0])
    theta = theta_of_time(teacher.schedule, s, 0.5)
    x0, eps = torch.randn(5, 2), torch.randn(5, 2)
    x_hat = torch.cos(theta).view(-1, 1) * x0 + torch.sin(theta).view(-1, 1) * 0.5 * eps
    x_s, back = to_schedule(teacher.schedule, x_hat, theta, 0.5)
    torch.testing.assert_close(back, s)
    torch.testing.assert_close(x_s, teacher.schedule.add_noise(x0, eps, s))
    torch.testing.assert_close(from_schedule(teacher.schedule, x_s, s, 0.5), x_hat)


def test_the_teachers_trigflow_ode_ends_where_its_flow_ode_ends():
    """Integrating dx̂/dθ from σ_d ε at θ = π/2 to 0 reaches the flow ODE's end, c ε."""
    teacher = Denoiser(GaussianFlow())
    eps = torch.randn(64, 2, dtype=torch.float64)
    x, steps = 0.5 * eps, 400
    grid = torch.linspace(math.pi / 2, 0, steps + 1, dtype=torch.float64)
    for a, b in zip(grid[:-1], grid[1:], strict=True):
        ta, tb = a.expand(64), b.expand(64)
        k1 = trig_velocity(teacher, x, ta, 0.5)
        k2 = trig_velocity(teacher, x + (b - a) * k1, tb, 0.5)
        x = x + (b - a) * (k1 + k2) / 2
    torch.testing.assert_close(x, SCALE * eps, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tangent", ["jvp", "finite-difference"])
def test_the_scm_tangent_vanishes_at_the_exact_consistency_function(tangent):
    cfg = SCM.Config(tangent=tangent, fd_step=1e-2, warmup_steps=0, adaptive_weighting=False)
    batch = {"x": SCALE * torch.randn(256, 2)}
    losses = {}
    for wobble in (0.0, 0.2):
        method = SCM(cfg, Denoiser(GaussianConsistency(wobble)), Denoiser(GaussianFlow()), gaussian_data())
        torch.manual_seed(0)
        losses[wobble] = float(method(batch, "student", 0)["scm"].detach())
    # a central difference in float32 leaves O(h²) + O(eps / h) of the tangent
    assert losses[0.0] < (1e-6 if tangent == "jvp" else 1e-4) and losses[0.2] > 1e-2, losses


def test_jvp_and_finite_difference_tangents_agree_on_a_network():
    """In float64 (the MLP's time embedding turns at up to 1000 rad per unit time, so a float32
    central difference needs a step too small for its rounding)."""
    torch.manual_seed(0)
    student = Denoiser(TimeMLP((2,), hidden=32, depth=2, time_dim=8).double())
    method = SCM(SCM.Config(fd_step=1e-6), student, Denoiser(GaussianFlow()), gaussian_data())
    x, dxdt = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    theta = torch.rand(16, dtype=torch.float64) * 1.5
    exact = method.student_tangent(x, theta, dxdt, None)
    method.cfg = method.cfg.model_copy(update={"tangent": "finite-difference"})
    torch.testing.assert_close(method.student_tangent(x, theta, dxdt, None), exact, atol=1e-5, rtol=1e-5)


class _NoForwardMode(torch.autograd.Function):
    """An op with a backward but no forward-mode rule, as CPU flash attention in diffusers."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


class NoForwardModeFlow(GaussianFlow):
    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return _NoForwardMode.apply(super().forward(x, t, cond))


def test_a_backbone_without_forward_mode_autodiff_names_the_finite_difference_tangent():
    method = SCM(SCM.Config(tangent="jvp"), Denoiser(NoForwardModeFlow()), Denoiser(GaussianFlow()),
                 gaussian_data())
    with pytest.raises(ConfigError, match="method.tangent: finite-difference"):
        method({"x": SCALE * torch.randn(8, 2)}, "student", 0)
    method.cfg = method.cfg.model_copy(update={"tangent": "finite-difference"})
    assert torch.isfinite(method({"x": SCALE * torch.randn(8, 2)}, "student", 0)["scm"])


def test_the_adaptive_weight_starts_at_zero_and_trains_with_the_student():
    method = SCM(SCM.Config(), Denoiser(GaussianConsistency(0.2)), Denoiser(GaussianFlow()), gaussian_data())
    theta = torch.rand(8)
    assert float(method.weighting(theta).detach().abs().max()) == 0.0
    (group,) = method.param_groups()
    assert len(group.parameters) == 1 + len(list(method.weighting.parameters()))
    optimizer = torch.optim.SGD(group.parameters, lr=0.1)
    method({"x": SCALE * torch.randn(64, 2)}, "student", 0)["scm"].backward()
    optimizer.step()
    assert float(method.weighting(theta).detach().abs().max()) > 0.0
    off = SCM(SCM.Config(adaptive_weighting=False), Denoiser(GaussianConsistency(0.2)),
              Denoiser(GaussianFlow()), gaussian_data())
    assert len(off.param_groups()[0].parameters) == 1
    assert not any(p.requires_grad for p in off.weighting.parameters())


def test_prior_weighting_divides_the_error_by_sigma_d_tan_theta(monkeypatch):
    monkeypatch.setattr(torch, "randn_like", torch.ones_like)  # the same noisy point for both losses
    for angle in (0.3, 1.2):
        losses = {}
        for prior in (False, True):
            method = SCM(SCM.Config(adaptive_weighting=False, warmup_steps=0, prior_weighting=prior, sigma_data=0.7),
                         Denoiser(GaussianConsistency(0.2)), Denoiser(GaussianFlow()), gaussian_data())
            monkeypatch.setattr(method, "sample_theta", lambda n, device, angle=angle: torch.full((n,), angle))
            losses[prior] = method({"x": torch.ones(4, 2)}, "student", 0)["scm"]
        assert float(losses[False]) > 0
        torch.testing.assert_close(losses[True], losses[False] / (0.7 * math.tan(angle)))


def test_trajectory_pairs_never_read_the_data_and_land_on_the_teachers_path():
    data = gaussian_data()
    data.train = torch.empty(data.train.shape, device="meta")  # any read of the data fails
    cfg = SCM.Config(pairs="trajectory", prior_samples=128, trajectory_steps=16,
                     warmup_steps=0, adaptive_weighting=False)
    method = SCM(cfg, Denoiser(GaussianConsistency()), Denoiser(GaussianFlow()), data)
    rows = method.train_data()
    assert set(rows) == {"noise"} and rows["noise"].shape == (128, 2)
    # the Gaussian flow keeps the standardised point fixed: x̂ = sqrt(cos²θ c² + sin²θ σ_d²) eps
    theta = torch.full((128,), 0.7)
    states = method.trajectory_states(rows["noise"], theta, None)
    expected = math.hypot(math.cos(0.7) * SCALE, math.sin(0.7) * 0.5) * rows["noise"]
    torch.testing.assert_close(states, expected, atol=1e-3, rtol=1e-3)
    torch.manual_seed(0)
    assert float(method(rows, "student", 0)["scm"].detach()) < 1e-6


def test_a_gentle_time_embedding_moves_at_most_time_scale_per_unit_time():
    """sCM's fix for unstable continuous-time training (Lu & Song 2024, Sec. 4.1) is a time
    embedding that varies slowly with t: `time_scale: 1` moves each feature by at most |dt|,
    while the DDPM convention (1000) turns its fastest features by 1000 |dt| radians."""
    t, dt = torch.linspace(0, 1, 101, dtype=torch.float64), 1e-3
    gentle, ddpm = (TimeMLP((2,), 16, 2, time_dim=32, time_scale=scale) for scale in (1.0, 1000.0))
    assert (gentle.embed_time(t + dt) - gentle.embed_time(t)).abs().max() <= dt
    assert (ddpm.embed_time(t + dt) - ddpm.embed_time(t)).abs().max() > 0.5


def test_the_student_must_embed_time_as_its_teacher_does_and_old_exports_read_as_ddpm():
    """init: teacher copies weights, which mean nothing under another time embedding: a
    different time_scale is refused by name; a teacher exported before the setting existed
    (no time_scale in its metadata) reads as the default 1000."""
    teacher = MLPConfig(hidden=16, depth=2).make_denoiser((2,), None)
    old_meta = {"model": {k: v for k, v in MLPConfig(hidden=16, depth=2).model_dump().items() if k != "time_scale"}}
    data = gaussian_data()
    for scale, fits in ((1000.0, True), (1.0, False)):
        cfg = SimpleNamespace(student=MLPConfig(hidden=16, depth=2, time_scale=scale, init="teacher"))
        if fits:
            student = build_student(cfg, data, teacher, old_meta)
            torch.testing.assert_close(student.net.state_dict(), teacher.net.state_dict())
        else:
            with pytest.raises(ModelMismatchError, match=r"student.time_scale=1.0 vs teacher 1000.0"):
                build_student(cfg, data, teacher, old_meta)


def test_scm_refuses_a_schedule_it_cannot_convert():
    with pytest.raises(ConfigError, match="TrigFlow frame.*'vp-cosine'"):
        SCM(SCM.Config(), Denoiser(GaussianFlow()), Denoiser(GaussianFlow(), schedule="vp-cosine"), gaussian_data())


def test_a_short_scm_run_exports_a_multistep_student(tiny_trained_teacher: Path, tmp_path: Path):
    config = tmp_path / "scm.yaml"
    config.write_text(
        "name: tiny-scm\n"
        "data: {name: 8gaussians, n: 2048, n_test: 1024}\n"
        f"teacher: {{name: run, path: {tiny_trained_teacher}}}\n"
        "student: {name: mlp, hidden: 64, depth: 2, init: teacher}\n"
        "method: {name: scm, warmup_steps: 2, student_steps: [1, 2]}\n"
        "train: {steps: 4, batch_size: 64, lr: 1.0e-4, progress: false, checkpoint_every: 4}\n"
        "eval: {nfe: [1, 2], n_samples: 256, timing_repeats: 0}\n")
    result = run(load_config(config), tmp_path / "run")
    rows = {(r["model"], r["nfe"]): r for r in result.rows}
    assert rows["student", 1]["sampler"] == "multistep" and ("student", 2) in rows
    assert (tmp_path / "run" / "student").is_dir()
