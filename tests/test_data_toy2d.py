"""Toy 2-D datasets: shapes, determinism, independence of train/test, registration."""

from __future__ import annotations

import pydantic
import pytest
import torch

from distill.data import ArrayData
from distill.data.toy2d import SAMPLERS, TOY_CONFIGS, eight_gaussians_modes
from distill.registry import DATASETS

NAMES = ["8gaussians", "checkerboard", "moons", "swissroll", "spirals", "rings"]


def test_registry_lists_every_toy_and_file() -> None:
    assert set(DATASETS.names()) >= {*NAMES, "file"}
    for name in NAMES:
        assert DATASETS.get(name) is TOY_CONFIGS[name]
        assert DATASETS.entry(name).summary


@pytest.mark.parametrize("name", NAMES)
def test_sampler_shape_and_determinism(name: str) -> None:
    sample, _ = SAMPLERS[name]
    x = sample(500, torch.Generator().manual_seed(3))
    assert x.shape == (500, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert x.abs().max() < 3.0  # every toy lives roughly in [-2, 2]^2
    assert torch.equal(x, sample(500, torch.Generator().manual_seed(3)))
    assert not torch.allclose(x, sample(500, torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("name", NAMES)
def test_build_splits_and_seeds(name: str) -> None:
    config = DATASETS.get(name)(n=300, n_test=100, seed=5)
    data = config.build()
    assert isinstance(data, ArrayData) and data.name == name and data.dim == 2
    assert data.train.shape == (300, 2) and data.test.shape == (100, 2)
    assert not torch.allclose(data.train[:100], data.test)  # test is drawn independently
    assert torch.equal(data.train, config.build().train)
    assert not torch.allclose(data.train, DATASETS.get(name)(n=300, seed=6).build().train)


def test_8gaussians_points_lie_near_their_modes() -> None:
    data = TOY_CONFIGS["8gaussians"](n=4000, n_test=10).build()
    assert data.modes is not None and data.mode_std == 0.1
    assert torch.equal(data.modes, eight_gaussians_modes())
    assert torch.allclose(data.modes.norm(dim=1), torch.full((8,), 2.0))
    nearest = torch.cdist(data.train, data.modes).min(dim=1).values
    assert (nearest < 5 * 0.1).all()
    counts = torch.cdist(data.train, data.modes).argmin(dim=1).bincount(minlength=8)
    assert counts.min() > 400  # 8 equal modes: about 500 each


def test_other_toys_have_no_modes() -> None:
    data = TOY_CONFIGS["moons"](n=10, n_test=10).build()
    assert data.modes is None and data.mode_std is None


def test_checkerboard_fills_only_even_cells() -> None:
    x = SAMPLERS["checkerboard"][0](2000, torch.Generator().manual_seed(0))
    assert x.min() >= -2 and x.max() <= 2
    cell = (x + 2).floor().long()
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()


@pytest.mark.parametrize("bad", [{"n": 0}, {"n_test": -1}, {"extra": 1}, {"name": "moons"}])
def test_config_validation(bad: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        TOY_CONFIGS["rings"](**bad)
