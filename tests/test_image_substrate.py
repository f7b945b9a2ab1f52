"""Images end to end without training: data files, backbones, CFG, export to diffusers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distill.data.images import DigitsConfig
from distill.data.points_file import PointsFileConfig
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.export import load_denoiser, save_denoiser
from distill.diffusion.samplers import fixed_noise, sample
from distill.errors import ConfigError, DataError
from distill.models.image import DiTConfig, UNetConfig
from distill.models.mlp import MLPConfig


def test_digits_are_scaled_split_and_labelled():
    data = DigitsConfig().build()
    assert data.shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.train) + len(data.test) == 1797 and len(data.test) == 359
    assert data.train.min() >= -1 and data.train.max() <= 1
    assert torch.equal(DigitsConfig().build().test, data.test)  # fixed split
    assert DigitsConfig(size=16).build().shape == (1, 16, 16)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_images_with_labels_load(tmp_path: Path):
    x = np.random.default_rng(0).integers(0, 256, size=(50, 12, 12), dtype=np.uint8)
    y = np.arange(50) % 5
    data = PointsFileConfig(path=_npz(tmp_path / "ok.npz", x=x, y=y)).build()
    assert data.shape == (1, 12, 12) and data.num_classes == 5
    assert data.train.min() >= -1 and data.train.max() <= 1


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.zeros((10, 8, 8), np.uint8), "y": np.zeros(9, np.int64)}, "9 labels for 10 images"),
    ({"images": np.zeros((10, 8, 8), np.uint8)}, "has no array 'x'"),
    ({"x": np.full((10, 8, 8), 3.0)}, "range over"),
    ({"x": np.zeros((10, 8, 8, 3), np.uint8)}, "channels-last"),
    ({"x": np.zeros((10, 8, 8), np.uint8), "y": np.zeros(10)}, "1-D integer array"),
    ({"x": np.zeros(10)}, "(N, H, W) or (N, C, H, W)"),
])
def test_bad_npz_files_name_the_problem(tmp_path: Path, arrays, message):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match="bad.npz") as err:
        PointsFileConfig(path=path).build()
    assert message in str(err.value)


def test_a_text_file_named_npz_is_refused(tmp_path: Path):
    path = tmp_path / "fake.npz"
    path.write_text("not an archive")
    with pytest.raises(DataError, match="not an .npz archive"):
        PointsFileConfig(path=path).build()


def test_backbones_refuse_sizes_they_cannot_take():
    with pytest.raises(ConfigError, match=r"multiples of 4 \(4, 8, 12, 16"):
        UNetConfig(channels=[8, 16, 32], norm_groups=8).make_denoiser((1, 10, 10), None)
    with pytest.raises(ConfigError, match="patch_size=3 must divide"):
        DiTConfig(patch_size=3).make_denoiser((1, 8, 8), None)
    with pytest.raises(ConfigError, match="shape"):
        UNetConfig().make_denoiser((2,), None)


@pytest.mark.parametrize("cfg", [UNetConfig(channels=[8, 16], norm_groups=8),
                                 DiTConfig(layers=1, heads=2, head_dim=8),
                                 MLPConfig(hidden=32, depth=2)])
def test_backbones_run_conditionally_and_unconditionally(cfg):
    for classes in (None, 10):
        denoiser = cfg.make_denoiser((1, 8, 8), classes)
        x = torch.randn(4, 1, 8, 8)
        labels = None if classes is None else torch.arange(4)
        assert denoiser.velocity(x, torch.rand(4), labels).shape == x.shape


def test_guidance_is_one_place_and_refused_without_classes():
    torch.manual_seed(0)
    denoiser = MLPConfig(hidden=32, depth=2).make_denoiser((4,), 3)
    x, t, y = torch.randn(5, 4), torch.rand(5), torch.tensor([0, 1, 2, 0, 1])
    cond, uncond = denoiser(x, t, y), denoiser(x, t, None)
    torch.testing.assert_close(denoiser.guided(x, t, y, 3.0), uncond + 3.0 * (cond - uncond))
    torch.testing.assert_close(denoiser.guided(x, t, y, 1.0), cond)
    unconditional = MLPConfig(hidden=32, depth=2).make_denoiser((4,), None)
    with pytest.raises(ConfigError, match="unconditional"):
        unconditional.guided(x, t, y, 2.0)


def test_edm_preconditioning_gives_the_skip_connection_at_low_noise():
    net = torch.nn.Module()
    net.forward = lambda x, t, cond: torch.zeros_like(x)  # F = 0: D(x) = c_skip x / alpha
    denoiser = Denoiser(net, "edm", "x0", preconditioning="edm")
    x = torch.randn(3, 2)
    t = torch.zeros(3)  # sigma = 0.002: c_skip ~ 1
    torch.testing.assert_close(denoiser.x0(x, t), x, atol=1e-4, rtol=0)


def test_exported_unet_loads_in_diffusers_and_reproduces_the_samples(tmp_path: Path):
    """UNet2DModel.from_pretrained(student) + its FlowMatchEulerDiscreteScheduler, sampling
    the same noise and labels on the same grid, gives the run's own student samples."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

    torch.manual_seed(0)
    cfg = UNetConfig(channels=[8, 16], norm_groups=8)
    denoiser = cfg.make_denoiser((1, 8, 8), 10)
    out = save_denoiser(tmp_path / "student", denoiser, cfg, (1, 8, 8), steps=[4], role="student")
    noise, labels = fixed_noise(16, (1, 8, 8), seed=0), torch.arange(16) % 10
    ours = sample(denoiser, noise, 4, "euler", cond=labels)

    unet = UNet2DModel.from_pretrained(out)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(out)
    scheduler.set_timesteps(sigmas=[1.0, 0.75, 0.5, 0.25])
    x = noise.clone()
    with torch.no_grad():
        for timestep in scheduler.timesteps:
            velocity = unet(x, timestep.expand(len(x)), class_labels=labels).sample
            x = scheduler.step(velocity, timestep, x).prev_sample
    torch.testing.assert_close(x, ours, atol=1e-5, rtol=0)
    reloaded, meta = load_denoiser(out)
    assert meta["num_classes"] == 10 and meta["steps"] == [4]
    torch.testing.assert_close(sample(reloaded, noise, 4, "euler", cond=labels), ours, atol=1e-6, rtol=0)


def test_a_plain_diffusers_model_is_a_teacher(tmp_path: Path):
    """A UNet2DModel folder with a scheduler config (no distill.json) loads as a teacher whose
    predictions equal the model it was saved from."""
    from distill.diffusion.teachers import DiffusersTeacher
    from distill.errors import CheckpointError

    torch.manual_seed(0)
    cfg = UNetConfig(channels=[8, 16], norm_groups=8)
    denoiser = cfg.make_denoiser((1, 8, 8), 10)
    out = save_denoiser(tmp_path / "unet", denoiser, cfg, (1, 8, 8), role="teacher")
    (out / "distill.json").unlink()
    teacher, meta = DiffusersTeacher(path=out).load()
    assert (meta["schedule"], meta["prediction"], meta["num_classes"]) == ("flow", "velocity", 10)
    x, t, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.arange(4)
    torch.testing.assert_close(teacher.velocity(x, t, y), denoiser.velocity(x, t, y))
    (out / "scheduler_config.json").unlink()
    with pytest.raises(CheckpointError, match="teacher.schedule and teacher.prediction"):
        DiffusersTeacher(path=out).load()
    teacher, meta = DiffusersTeacher(path=out, schedule="flow", prediction="velocity").load()
    with pytest.raises(CheckpointError, match="missing config.json"):
        DiffusersTeacher(path=tmp_path).load()


def test_configs_that_cannot_sample_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="alpha\\(1\\) = 0"):
        MLPConfig(schedule="flow", prediction="eps")
    with pytest.raises(ValidationError, match="alpha\\(1\\) = 0"):
        MLPConfig(schedule="trigflow", prediction="x0", preconditioning="edm")
    with pytest.raises(ValidationError, match="preconditioning: edm"):
        MLPConfig(schedule="edm", prediction="x0")


def test_trigflow_samples_without_nan_on_every_sampler():
    torch.manual_seed(0)
    denoiser = MLPConfig(hidden=16, depth=1, schedule="trigflow").make_denoiser((2,), None)
    noise = fixed_noise(8, (2,), seed=0)
    for sampler in ("euler", "heun", "ddim", "dpm++2m", "multistep"):
        assert torch.isfinite(sample(denoiser, noise, 4, sampler)).all(), sampler


def test_dit_does_not_drop_labels_on_its_own():
    torch.manual_seed(0)
    denoiser = DiTConfig(layers=1, heads=2, head_dim=8).make_denoiser((1, 8, 8), 10).train()
    x, t, y = torch.randn(6, 1, 8, 8), torch.rand(6), torch.arange(6)
    torch.testing.assert_close(denoiser(x, t, y), denoiser(x, t, y))


def test_guidance_without_labels_is_an_error():
    denoiser = MLPConfig(hidden=16, depth=1).make_denoiser((2,), 3)
    with pytest.raises(ConfigError, match="needs class labels"):
        denoiser.guided(torch.randn(2, 2), torch.rand(2), None, 2.0)


def test_scheduler_config_only_where_diffusers_reproduces_the_sampler(tmp_path: Path):
    cfg = UNetConfig(channels=[8, 16], norm_groups=8)
    denoiser = cfg.make_denoiser((1, 8, 8), None)
    out = save_denoiser(tmp_path / "a", denoiser, cfg, (1, 8, 8), steps=[2], sampler="multistep")
    assert not (out / "scheduler_config.json").exists()
    out = save_denoiser(tmp_path / "b", denoiser, cfg, (1, 8, 8), steps=[2], sampler="euler")
    meta = load_denoiser(out)[1]
    assert (out / "scheduler_config.json").exists() and meta["scheduler_sigmas"] == {"2": [1.0, 0.5]}


@pytest.mark.parametrize("cfg", [UNetConfig(channels=[8, 16], norm_groups=8, two_time=True),
                                 DiTConfig(layers=1, heads=2, head_dim=8),
                                 MLPConfig(hidden=32, depth=2, two_time=True)])
def test_time_scale_is_the_rate_the_backbone_sees_time_at(cfg):
    """A network with time_scale 1 at (t, s) is the same weights at the default 1000 seen at
    (t / 1000, s / 1000): the scale multiplies time before every embedding (the two-time
    UNet's gap embedding too, given non-zero weights here)."""
    torch.manual_seed(0)
    gentle = cfg.model_copy(update={"time_scale": 1.0}).make_denoiser((1, 8, 8), 10)
    ddpm = cfg.make_denoiser((1, 8, 8), 10)
    for p in gentle.net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ddpm.net.load_state_dict(gentle.net.state_dict())
    x, t, labels = torch.randn(4, 1, 8, 8), torch.tensor([0.9, 0.5, 0.3, 0.1]), torch.arange(4)
    times = {"s": t / 3} if cfg.two_time else {}
    got = gentle.net(x, t, labels, **times)
    want = ddpm.net(x, t / 1000, labels, **{k: v / 1000 for k, v in times.items()})
    unscaled = ddpm.net(x, t, labels, **times)  # the same t seen at 1000 rad per unit
    assert (got - want).abs().max() < 1e-3 * (got - unscaled).abs().max()


def test_a_unet_with_its_own_time_scale_exports_without_a_diffusers_scheduler(tmp_path: Path):
    """Diffusers' schedulers pass 1000 t as the timestep, so a UNet that takes time_scale * t
    gets no scheduler_config.json; distill reloads it with its scale and the same samples."""
    cfg = UNetConfig(channels=[8, 16], norm_groups=8, time_scale=1.0)
    denoiser = cfg.make_denoiser((1, 8, 8), None)
    out = save_denoiser(tmp_path / "s", denoiser, cfg, (1, 8, 8), steps=[2], sampler="euler")
    assert not (out / "scheduler_config.json").exists()
    reloaded, meta = load_denoiser(out)
    assert meta["model"]["time_scale"] == 1.0 and reloaded.net.time_scale == 1.0
    noise = fixed_noise(4, (1, 8, 8), seed=0)
    torch.testing.assert_close(sample(reloaded, noise, 2, "euler"), sample(denoiser, noise, 2, "euler"))


def test_time_scale_is_refused_where_the_network_takes_a_step_index():
    with pytest.raises(ValueError, match="vp-discrete feeds the network the DDPM step index"):
        UNetConfig(schedule="vp-discrete", prediction="eps", time_scale=1.0)
