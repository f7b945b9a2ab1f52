"""SLAM (`slam`): the sub-path linear ODE point, the two-time student it needs, and that with
the sub-path off it is `cd`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.consistency import ConsistencyDistillation
from distill.diffusion.methods.slam import SubpathLinearApproximation, subpath_point
from distill.diffusion.schedules import make_schedule
from distill.errors import ConfigError
from distill.models.mlp import TimeMLP


@pytest.mark.parametrize("schedule", ["flow", "vp-cosine", "edm"])
def test_subpath_point_runs_from_the_near_point_to_the_far_one_on_a_ddim_path(schedule):
    sched = make_schedule(schedule)
    x0, eps = torch.randn(6, 2), torch.randn(6, 2)
    t, s = torch.full((6,), 0.6), torch.tensor([0.0, 0.1, 0.3, 0.5, 0.55, 0.59])
    x_t, x_s = sched.add_noise(x0, eps, t), sched.add_noise(x0, eps, s)
    torch.testing.assert_close(subpath_point(sched, x_t, t, x_s, s, torch.ones(6)), x_t, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(subpath_point(sched, x_t, t, x_s, s, torch.zeros(6)), x_s, atol=1e-4, rtol=1e-4)
    # both points on one DDIM path (same x0, eps): every sub-path point is on it at its own time
    gamma = torch.rand(6)
    torch.testing.assert_close(subpath_point(sched, x_t, t, x_s, s, gamma),
                               sched.add_noise(x0, eps, s + gamma * (t - s)), atol=1e-4, rtol=1e-4)


def test_on_the_flow_schedule_the_subpath_is_the_straight_segment():
    sched = make_schedule("flow")
    x_t, x_s, gamma = torch.randn(5, 2), torch.randn(5, 2), torch.rand(5)
    t, s = torch.full((5,), 0.5), torch.full((5,), 0.25)
    torch.testing.assert_close(subpath_point(sched, x_t, t, x_s, s, gamma),
                               gamma[:, None] * x_t + (1 - gamma[:, None]) * x_s)


def two_time_student() -> Denoiser:
    return Denoiser(TimeMLP((2,), hidden=16, depth=2, time_dim=8, two_time=True))


def test_slam_needs_a_two_time_student_unless_its_subpath_is_off():
    teacher = Denoiser(TimeMLP((2,), hidden=16, depth=2, time_dim=8))
    with pytest.raises(ConfigError, match="student.two_time: true"):
        SubpathLinearApproximation(SubpathLinearApproximation.Config(), Denoiser(nn.Linear(2, 2)), teacher)
    SubpathLinearApproximation(SubpathLinearApproximation.Config(subpath=False), Denoiser(nn.Linear(2, 2)), teacher)
    assert SubpathLinearApproximation(SubpathLinearApproximation.Config(), two_time_student(), teacher).student_steps() == [1, 2, 4]


def test_with_the_subpath_off_slam_is_cd_and_on_it_the_student_is_told_where_it_is():
    teacher = Denoiser(TimeMLP((2,), hidden=16, depth=2, time_dim=8))
    reference = two_time_student()

    def run(method_cls, **options):
        student = two_time_student()
        student.load_state_dict(reference.state_dict())
        method = method_cls(method_cls.Config(intervals=8, **options), student, teacher)
        torch.manual_seed(0)
        return method({"x": torch.randn(32, 2)}, "student", 0)["consistency"]

    torch.testing.assert_close(run(SubpathLinearApproximation, subpath=False), run(ConsistencyDistillation))
    on = run(SubpathLinearApproximation)
    assert not torch.allclose(on, run(ConsistencyDistillation))
    with torch.no_grad():  # the second time (the sub-path position) enters the loss
        reference.net.layers[0].weight[:, -8:] += 1.0
    assert not torch.allclose(run(SubpathLinearApproximation), on)
