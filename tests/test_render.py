"""The Gaussian-splat renderer, the SDS update, and the render task's export round trip and
config errors."""

from __future__ import annotations

import pytest
import torch

from distill.diffusion.denoiser import Denoiser
from distill.errors import CheckpointError
from distill.render.methods.sds import SDS, distillation_surrogate
from distill.render.splats import GaussianSplatsConfig
from distill.render.task import load_renderer, save_renderer


def test_splats_render_in_range_with_a_gradient_to_every_parameter():
    renderer = GaussianSplatsConfig(splats=5, per_class=2).make_renderer((1, 8, 8), 10, seed=0)
    x = renderer()
    assert x.shape == (20, 1, 8, 8) and renderer.labels.tolist() == list(range(10)) * 2
    assert x.min() >= -1 and x.max() <= 1
    x.sum().backward()
    for p in renderer.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    subset = renderer(torch.tensor([3, 7]))
    torch.testing.assert_close(subset, x.detach()[[3, 7]])


def test_one_opaque_splat_lights_its_pixel_and_not_the_far_corner():
    renderer = GaussianSplatsConfig(splats=1, per_class=1, init_scale=0.2).make_renderer((1, 8, 8), 1, seed=0)
    with torch.no_grad():
        renderer.centres.zero_()  # the image centre
        renderer.opacity_logits.fill_(10.0)
    x = renderer()[0, 0]
    assert x[3:5, 3:5].min() > 0.3 and x[0, 0] < -0.99  # 1 - exp(-d²/2s²) at 0.18 px


def test_the_surrogate_loss_has_the_given_gradient():
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    g = torch.randn(3, 1, 8, 8)
    distillation_surrogate(x, g).backward()
    torch.testing.assert_close(x.grad, g / 3)


class TowardsConstant(torch.nn.Module):
    """An x0-predicting 'teacher' whose x0 is the constant image `target` for every class."""

    def __init__(self, target: float) -> None:
        super().__init__()
        self.target = target
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, cond=None):
        return torch.full_like(x, self.target)


def test_sds_pulls_the_renders_to_what_the_teacher_denoises_them_to():
    """With a teacher whose x0 is a white image, SDS must brighten every render."""
    from distill.diffusion.schedules import make_schedule

    teacher = Denoiser(TowardsConstant(1.0), make_schedule("vp-cosine"), "x0", num_classes=10)
    renderer = GaussianSplatsConfig(splats=4, per_class=1, init_scale=0.15).make_renderer((1, 8, 8), 10, seed=0)
    method = SDS(SDS.Config(guidance=1.0, t_max=0.9), student=renderer, teacher=teacher.requires_grad_(False))
    start = renderer().mean().item()
    optimiser = torch.optim.Adam(renderer.parameters(), lr=0.05)
    for step in range(60):
        optimiser.zero_grad()
        method({}, "student", step)["sds"].backward()
        optimiser.step()
    assert renderer().mean().item() > start + 0.5


def test_renderer_export_round_trips_and_refuses_an_edited_prompt_count(tmp_path):
    cfg = GaussianSplatsConfig(splats=3, per_class=2)
    renderer = cfg.make_renderer((1, 8, 8), 10, seed=4)
    save_renderer(tmp_path / "student", renderer, cfg, 10, role="student", method="sds", run="t")
    assert (tmp_path / "student" / "renders.png").stat().st_size > 0
    loaded, meta = load_renderer(tmp_path / "student")
    torch.testing.assert_close(loaded(), renderer().detach())
    assert meta["prompts"] == 20 and not any(p.requires_grad for p in loaded.parameters())
    path = tmp_path / "student" / "distill.json"
    path.write_text(path.read_text().replace('"prompts": 20', '"prompts": 30'))
    with pytest.raises(CheckpointError, match="prompts"):
        load_renderer(tmp_path / "student")


def test_spread_is_zero_for_identical_renders_of_a_class_and_grows_with_their_distance():
    from distill.render.task import within_class_spread

    labels = torch.tensor([0, 1, 0, 1])
    same = torch.zeros(4, 1, 2, 2)
    assert within_class_spread(same, labels) == 0
    apart = same.clone()
    apart[2] += 1.0  # class 0's two renders differ by 1 on 4 pixels: distance 2
    assert within_class_spread(apart, labels) == pytest.approx(1.0)  # mean of class 0 (2) and class 1 (0)
