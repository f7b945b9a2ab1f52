"""ArcFlow (`arcflow`): the momentum-mixture policy's analytic integral, the policy head and
its initialisation from a teacher, the sampler, the export, and the rollout-imitation loss."""

from __future__ import annotations

import pytest
import torch

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.export import load_denoiser, save_denoiser
from distill.diffusion.methods.arcflow import ArcFlow, rollout_intervals
from distill.diffusion.momentum_policy import MomentumPolicy, packed_size
from distill.diffusion.samplers import sample
from distill.errors import ConfigError
from distill.models.image import UNetConfig
from distill.models.mlp import MLPConfig


def random_policy(components: int, batch: int = 5, dtype: torch.dtype = torch.float64) -> MomentumPolicy:
    out = torch.randn(batch, packed_size((2,), components), dtype=dtype)
    return MomentumPolicy.unpack(out, (2,), components, torch.full((batch,), 0.9, dtype=dtype))


def test_the_analytic_step_is_the_integral_of_the_policy_velocity():
    policy = random_policy(4)
    x, t_a, t_b = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.7, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    grid = torch.linspace(0.7, 0.0, 4001, dtype=torch.float64)
    numeric = x.clone()
    for a, b in zip(grid[:-1], grid[1:], strict=True):  # midpoint rule
        numeric = numeric + (b - a) * policy.velocity(((a + b) / 2).expand(5))
    torch.testing.assert_close(policy.advance(x, t_a, t_b), numeric, atol=1e-7, rtol=1e-7)
    # steps compose: 0.7 -> 0.3 -> 0 is 0.7 -> 0
    mid = torch.full((5,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(policy.advance(policy.advance(x, t_a, mid), mid, t_b), policy.advance(x, t_a, t_b))


def test_one_component_is_the_straight_euler_step_and_more_components_curve():
    straight = random_policy(1)
    x, t, s = torch.randn(5, 2, dtype=torch.float64), straight.t_src, torch.full((5,), 0.4, dtype=torch.float64)
    torch.testing.assert_close(straight.advance(x, t, s), x + (s - t)[:, None] * straight.means[:, 0])
    torch.testing.assert_close(straight.velocity(s), straight.velocity(t))
    curved = random_policy(4)
    assert not torch.allclose(curved.velocity(s), curved.velocity(t))


def test_component_dropout_never_drops_every_component():
    policy = random_policy(3, batch=2000)
    dropped = policy.drop_components(0.5)  # where all three would go, none does
    kept = torch.isfinite(dropped.logits).flatten(1).sum(1)
    assert kept.min() >= 1 and (kept < 3).float().mean() > 0.6
    assert torch.isfinite(dropped.velocity(torch.full((2000,), 0.5, dtype=torch.float64))).all()


def test_a_policy_student_starts_as_its_teacher_and_samples_a_teacher_euler_step():
    torch.manual_seed(0)
    teacher = MLPConfig(hidden=32, depth=2).make_denoiser((2,), None)
    student = MLPConfig(hidden=32, depth=2, policy_components=4).make_denoiser((2,), None)
    student.net.load_one_output_state(teacher.net.state_dict())
    x, t = torch.randn(8, 2), torch.rand(8)
    torch.testing.assert_close(student.velocity(x, t), teacher.velocity(x, t))  # weights uniform, means equal
    one = MLPConfig(hidden=32, depth=2, policy_components=1).make_denoiser((2,), None)
    one.net.load_one_output_state(teacher.net.state_dict())
    noise = torch.randn(8, 2)
    torch.testing.assert_close(sample(one, noise, 2, "arcflow"), sample(teacher, noise, 2, "euler"))
    # with spread rates the 4-component policy's steps bend away from the straight ones
    assert not torch.allclose(sample(student, noise, 2, "arcflow"), sample(teacher, noise, 2, "euler"))


def test_the_exported_policy_student_loads_and_samples_the_same(tmp_path):
    cfg = MLPConfig(hidden=32, depth=2, policy_components=3)
    student = cfg.make_denoiser((2,), 4)
    out = save_denoiser(tmp_path / "student", student, cfg, (2,), steps=[2], sampler="arcflow")
    loaded, meta = load_denoiser(out)
    assert meta["sampler"] == "arcflow" and loaded.policy_components == 3
    noise, labels = torch.randn(6, 2), torch.arange(6) % 4
    torch.testing.assert_close(sample(loaded, noise, 2, "arcflow", cond=labels), sample(student, noise, 2, "arcflow", cond=labels))


def test_policy_heads_are_refused_where_they_do_not_exist():
    with pytest.raises(ValueError, match="prediction: velocity"):
        MLPConfig(policy_components=4, prediction="x0")
    with pytest.raises(ConfigError, match="mlp backbone for arcflow"):
        UNetConfig(policy_components=4).make_denoiser((1, 8, 8), None)
    teacher = MLPConfig(hidden=16, depth=1).make_denoiser((2,), None)
    data = ArrayData("toy", torch.randn(10, 2), torch.randn(10, 2))
    with pytest.raises(ConfigError, match="student.policy_components"):
        ArcFlow(ArcFlow.Config(), MLPConfig(hidden=16, depth=1).make_denoiser((2,), None), teacher, data)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_rollout_intervals_split_the_step_between_student_and_teacher(ratio):
    student, teacher = rollout_intervals(64, 4, 0.5, ratio, torch.device("cpu"))
    assert (student >= 0).all() and (teacher >= 0).all()
    assert (student.sum(1) <= (1 - ratio) * 0.5 + 1e-6).all()
    torch.testing.assert_close(teacher.sum(1), torch.full((64,), ratio * 0.5))


def test_the_imitation_loss_is_zero_for_a_teacher_it_reproduces_and_trains_the_policy():
    """A teacher whose velocity is constant in time along straight lines (v = eps - mean, data
    a point mass) is reproduced exactly by a one-component policy started from it; a
    perturbed policy has a positive loss with gradients on every policy output."""
    torch.manual_seed(0)
    data = ArrayData("toy", torch.randn(64, 2), torch.randn(16, 2))
    teacher = MLPConfig(hidden=16, depth=1).make_denoiser((2,), None)
    student = MLPConfig(hidden=16, depth=1, policy_components=3).make_denoiser((2,), None)
    method = ArcFlow(ArcFlow.Config(prior_samples=64, component_dropout=0.0), student, teacher, data, total_steps=10)
    batch = {"noise": method.train_data()["noise"][:32]}
    loss = method(batch, "student", 5)["imitation"]
    assert loss > 0
    loss.backward()
    last = student.net.layers[-1].weight.grad
    assert last.abs().sum(1).gt(0).all()  # means, weight logits and rates all receive gradient

    class Straight(torch.nn.Module):  # x_t = t eps + (1 - t) c: v = (x_t - c) / t, constant along paths
        def forward(self, x, t, cond=None):
            return (x - 1.5) / t.clamp(min=1e-3)[:, None]

    point_teacher = Denoiser(Straight())

    class Exact(torch.nn.Module):
        policy_components = 1

        def forward(self, x, t, cond=None):
            return torch.cat([(x - 1.5) / t[:, None], torch.zeros(len(x), 1)], dim=1)

    exact = ArcFlow(ArcFlow.Config(prior_samples=64), Denoiser(Exact()), point_teacher, data, total_steps=10)
    assert exact({"noise": torch.randn(32, 2)}, "student", 9)["imitation"] < 1e-10
