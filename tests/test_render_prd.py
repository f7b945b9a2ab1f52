"""Unit tests of progressive rendering distillation (`prd`) and its splat generator."""

from __future__ import annotations

import pytest
import torch

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.schedules import make_schedule
from distill.render.generator import SplatGeneratorConfig
from distill.render.methods.prd import PRD, part_time, teacher_window
from distill.render.task import load_renderer, save_renderer
from test_render import TowardsConstant


def generator(**overrides):
    cfg = SplatGeneratorConfig(**{"splats": 4, "per_class": 2, "hidden": 32, "depth": 2, **overrides})
    return cfg, cfg.make_renderer((1, 8, 8), 10, seed=3)


def test_generator_renders_its_prompts_deterministically_in_range():
    _, gen = generator(sample_steps=3)
    x = gen()
    assert x.shape == (20, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(gen(), x)
    torch.testing.assert_close(gen(torch.tensor([5, 0])), x[[5, 0]])


def test_generator_export_round_trips(tmp_path):
    cfg, gen = generator()
    save_renderer(tmp_path / "student", gen, cfg, 10, role="student", method="prd", run="t")
    loaded, meta = load_renderer(tmp_path / "student")
    torch.testing.assert_close(loaded(), gen().detach())
    assert meta["model"]["name"] == "splat-generator" and meta["prompts"] == 20


def test_parts_slice_the_time_from_the_top_and_the_teacher_windows_follow():
    times = [part_time(i, 4, 1000, "cpu") for i in range(4)]
    for i, t in enumerate(times):
        assert (t <= 1 - i / 4).all() and (t >= 1 - (i + 1) / 4).all()
    cfg = PRD.Config(parts=4, t_min=0.02, t_max=0.98)
    windows = [teacher_window(cfg, i) for i in range(4)]
    assert windows[0][1] == pytest.approx(0.98) and windows[-1][0] == pytest.approx(0.02)
    assert all(a[0] == pytest.approx(b[1]) for a, b in zip(windows, windows[1:], strict=False))
    assert teacher_window(PRD.Config(parts=4, window="full"), 2) == (0.02, 0.98)


def test_prd_supervises_every_step_and_trains_the_generator_towards_the_teacher():
    """One loss per part, each with a gradient to the generator; with a teacher whose x0 is a
    white image, PRD must brighten the generator's renders of new noise."""
    teacher = Denoiser(TowardsConstant(1.0), make_schedule("vp-cosine"), "x0", num_classes=10)
    _, gen = generator(sample_steps=3)
    method = PRD(PRD.Config(guidance=1.0, parts=3, batch=16), student=gen, teacher=teacher.requires_grad_(False))
    losses = method({}, "student", 0)
    assert sorted(losses) == ["sds_step0", "sds_step1", "sds_step2"]
    start = gen().mean().item()
    optimiser = torch.optim.Adam(gen.parameters(), lr=3e-3)
    for step in range(80):
        optimiser.zero_grad()
        sum(method({}, "student", step).values()).backward()
        optimiser.step()
    assert gen().mean().item() > start + 0.5


def test_sds_refuses_a_generator_and_prd_refuses_splats():
    from conftest import CONFIGS
    from distill.config import load_config
    from distill.errors import ConfigError
    from distill.render.task import build_render

    cfg = load_config(CONFIGS.parent / "digits" / "sds-digits.yaml", ["student.name=splat-generator"])
    with pytest.raises(ConfigError, match="student.name must be 'gaussian-splats'"):
        build_render(cfg)
    cfg = load_config(CONFIGS.parent / "digits" / "prd-digits.yaml",
                      ["student={name: gaussian-splats}"])
    with pytest.raises(ConfigError, match="student.name must be 'splat-generator'"):
        build_render(cfg)
