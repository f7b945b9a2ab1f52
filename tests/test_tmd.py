"""Unit tests of the flow-head backbone (`distill.models.flow_head`) and `tmd`."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from conftest import CONFIGS
from distill.config import load_config
from distill.errors import ConfigError
from distill.models.mlp import MLPConfig


def pair(num_classes=None, head=1, inner=3):
    plain = MLPConfig(name="mlp", hidden=32, depth=3).build((2,), num_classes)
    flow = MLPConfig(name="mlp", hidden=32, depth=3, flow_head=head, inner_steps=inner).build((2,), num_classes)
    flow.load_plain_state(plain.state_dict())
    return plain, flow


@pytest.mark.parametrize(("num_classes", "head"), [(None, 1), (3, 2)])
def test_the_flow_head_starts_as_the_plain_network_for_every_inner_noise(num_classes, head):
    plain, flow = pair(num_classes, head)
    x, t = torch.randn(6, 2), torch.rand(6)
    cond = None if num_classes is None else torch.arange(6) % num_classes
    for mode in (True, False):
        flow.train(mode)
        torch.testing.assert_close(flow(x, t, cond), plain(x, t, cond))


def test_the_head_samples_in_training_is_fixed_in_evaluation_and_learns_through_the_rollout():
    _, flow = pair()
    with torch.no_grad():
        flow.head_from_inner.weight.normal_()  # the head now reads its inner noise
    x, t = torch.randn(64, 2), torch.rand(64)
    flow.train()
    assert not torch.allclose(flow(x, t), flow(x, t))
    flow.eval()
    torch.testing.assert_close(flow(x, t), flow(x, t))
    flow.train()
    flow(x, t).square().sum().backward()
    assert flow.head_from_inner.weight.grad.abs().sum() > 0  # the y and s inputs get a gradient


def test_tmd_student_starts_as_its_teacher_and_bad_settings_are_named(tmp_path):
    from distill.diffusion.task import build_diffusion

    cfg = load_config(CONFIGS / "tmd-8gaussians.yaml", ["teacher.overrides=[train.steps=20]", "train.steps=10"])
    built = build_diffusion(cfg)
    x, t = torch.randn(16, 2), torch.rand(16)
    student, teacher = built.method.student, built.teacher
    torch.testing.assert_close(student.net(x, t), teacher.net(x, t))
    with pytest.raises(ConfigError, match="student.flow_head"):
        build_diffusion(load_config(CONFIGS / "tmd-8gaussians.yaml", [
            "teacher.overrides=[train.steps=20]", "student.flow_head=0", "student.inner_steps=1"]))
    with pytest.raises(ValidationError, match="inner_steps > 1 needs a flow head"):
        MLPConfig(name="mlp", inner_steps=2)
    with pytest.raises(ValidationError, match="flow_head takes 1 to depth - 1"):
        MLPConfig(name="mlp", depth=2, flow_head=2)
