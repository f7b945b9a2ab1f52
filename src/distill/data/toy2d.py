"""The classic 2-D toy distributions used to test generative models (FFJORD-style benchmarks).

Every sampler is a pure function `sample_<name>(n, generator) -> (n, 2)` float32 tensor,
deterministic given the generator's state. All of them live roughly in [-2, 2]^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, create_model, model_validator

from distill.data.base import ArrayData, LabelledDatasetConfig
from distill.registry import DATASETS

Sampler = Callable[[int, torch.Generator], torch.Tensor]

EIGHT_GAUSSIANS_RADIUS = 2.0
EIGHT_GAUSSIANS_STD = 0.1


def _normal(n: int, generator: torch.Generator, dim: int = 2) -> torch.Tensor:
    """Standard normal draws, (n, dim)."""
    return torch.randn(n, dim, generator=generator)


def _uniform(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform draws on [0, 1), (n,)."""
    return torch.rand(n, generator=generator)


def eight_gaussians_modes() -> torch.Tensor:
    """The 8 centres, evenly spaced on the circle of radius 2 starting at angle 0: (8, 2)."""
    angles = torch.arange(8, dtype=torch.float32) * (2 * math.pi / 8)
    return EIGHT_GAUSSIANS_RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)


def interior_modes(mode_classes: torch.Tensor) -> torch.Tensor:
    """(K,) bool: the modes of the 8gaussians circle whose two neighbours on it are of their own
    class (mode_classes: (K,), in circle order). There p(class | x) is highest, so classifier-
    free guidance concentrates a class's samples on them: with classes [[0,1,2,3],[4,5,6,7]]
    the middle modes 1, 2, 5, 6 of each arc."""
    return (mode_classes.roll(1) == mode_classes) & (mode_classes.roll(-1) == mode_classes)


def sample_8gaussians_labelled(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal mixture of 8 isotropic Gaussians (std 0.1) centred on a circle of radius 2:
    points (n, 2) and the index of each point's mode (n,) long."""
    which = torch.randint(0, 8, (n,), generator=generator)
    return eight_gaussians_modes()[which] + EIGHT_GAUSSIANS_STD * _normal(n, generator), which


def sample_8gaussians(n: int, generator: torch.Generator) -> torch.Tensor:
    """The points of `sample_8gaussians_labelled`: (n, 2)."""
    return sample_8gaussians_labelled(n, generator)[0]


def sample_checkerboard(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform on the 8 filled cells of a 4x4 checkerboard over [-2, 2]^2 (cell (i, j) filled
    when i + j is even): (n, 2)."""
    cells = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])
    which = torch.randint(0, len(cells), (n,), generator=generator)
    corner = cells[which].float() - 2.0
    return corner + torch.rand(n, 2, generator=generator)


def sample_moons(n: int, generator: torch.Generator) -> torch.Tensor:
    """Two interleaved half circles (upper: centre (0, 0); lower: centre (1, 0.5)), Gaussian noise
    std 0.05, then centred and scaled by 1.3: (n, 2)."""
    t = math.pi * _uniform(n, generator)
    lower = torch.randint(0, 2, (n,), generator=generator).bool()
    x = torch.where(lower, 1.0 - t.cos(), t.cos())
    y = torch.where(lower, 0.5 - t.sin(), t.sin())
    points = torch.stack([x - 0.5, y - 0.25], dim=1) + 0.05 * _normal(n, generator)
    return 1.3 * points


def sample_swissroll(n: int, generator: torch.Generator) -> torch.Tensor:
    """2-D swiss roll (t cos t, t sin t), t uniform on [1.5 pi, 4.5 pi], scaled by 1/7 so it fits
    [-2, 2]^2, plus Gaussian noise std 0.05: (n, 2)."""
    t = 1.5 * math.pi * (1.0 + 2.0 * _uniform(n, generator))
    points = torch.stack([t * t.cos(), t * t.sin()], dim=1) / 7.0
    return points + 0.05 * _normal(n, generator)


def sample_spirals(n: int, generator: torch.Generator) -> torch.Tensor:
    """Two interleaved Archimedean spirals r = t, t in [0, 3 pi] (density ~ sqrt-uniform in t),
    the second rotated by pi, scaled to radius 2, plus Gaussian noise std 0.05: (n, 2)."""
    t = 3 * math.pi * _uniform(n, generator).sqrt()
    sign = 1.0 - 2.0 * torch.randint(0, 2, (n,), generator=generator).float()
    points = sign[:, None] * torch.stack([t * t.cos(), t * t.sin()], dim=1) * (2 / (3 * math.pi))
    return points + 0.05 * _normal(n, generator)


def sample_rings(n: int, generator: torch.Generator) -> torch.Tensor:
    """4 concentric circles of radius 0.5, 1, 1.5, 2, each chosen with probability 1/4, uniform
    angle, plus Gaussian noise std 0.04: (n, 2)."""
    radius = 0.5 * (1 + torch.randint(0, 4, (n,), generator=generator).float())
    angle = 2 * math.pi * _uniform(n, generator)
    points = radius[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
    return points + 0.04 * _normal(n, generator)


SAMPLERS: dict[str, tuple[Sampler, str]] = {
    "8gaussians": (sample_8gaussians, "8 Gaussians (std 0.1) on a circle of radius 2"),
    "checkerboard": (sample_checkerboard, "uniform on 8 squares of a 4x4 checkerboard on [-2,2]^2"),
    "moons": (sample_moons, "two interleaved half circles"),
    "swissroll": (sample_swissroll, "2-D swiss roll"),
    "spirals": (sample_spirals, "two interleaved spirals"),
    "rings": (sample_rings, "4 concentric rings"),
}


class ToyConfig(LabelledDatasetConfig):
    """Fields shared by every toy 2-D dataset; train uses `seed`, test uses `seed + 1`."""

    n: int = Field(50_000, gt=0, description="number of training points")
    n_test: int = Field(40_000, gt=0, description="number of held-out test points (the evaluation's reference)")
    seed: int = 0
    labelled: bool = Field(False, description=(
        "8gaussians only: label each point by its mode (8 classes; class_groups merges them, "
        "e.g. [[0,1,2,3],[4,5,6,7]]: 2 classes that are mixtures), for class-conditional "
        "teachers and students (CFG, dmd-decoupled, multi-student)"))
    rotate: float = Field(0.0, description=(
        "rotate every point (and the 8gaussians modes) by this many degrees about the origin: a "
        "shifted target distribution for fine-tuning a student made on the unrotated one (pso)"))

    @model_validator(mode="after")
    def _labels(self) -> ToyConfig:
        if self.labelled and self.name != "8gaussians":
            raise ValueError(f"labelled: true needs 8gaussians (whose points come from known modes); "
                             f"{self.name!r} has no classes")
        if self.class_groups is not None and not self.labelled:
            raise ValueError("class_groups merges the modes' labels; set labelled: true as well")
        return self

    def build(self) -> ArrayData:
        data = self._build()
        if not self.rotate:
            return data
        angle = math.radians(self.rotate)
        turn = torch.tensor([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
        data.train, data.test = data.train @ turn, data.test @ turn  # rows x -> R x
        if data.modes is not None:
            data.modes = data.modes @ turn
        return data

    def _build(self) -> ArrayData:
        sampler, _ = SAMPLERS[self.name]
        if self.name != "8gaussians":
            train = sampler(self.n, torch.Generator().manual_seed(self.seed))
            test = sampler(self.n_test, torch.Generator().manual_seed(self.seed + 1))
            return ArrayData(self.name, train, test)
        train, train_labels = sample_8gaussians_labelled(self.n, torch.Generator().manual_seed(self.seed))
        test, test_labels = sample_8gaussians_labelled(self.n_test, torch.Generator().manual_seed(self.seed + 1))
        if not self.labelled:
            return ArrayData(self.name, train, test, eight_gaussians_modes(), EIGHT_GAUSSIANS_STD)
        return self.grouped(ArrayData(self.name, train, test, eight_gaussians_modes(), EIGHT_GAUSSIANS_STD,
                                      train_labels=train_labels, test_labels=test_labels, num_classes=8))


TOY_CONFIGS: dict[str, type[ToyConfig]] = {}
for _name, (_sampler, _summary) in SAMPLERS.items():
    _config = create_model(
        f"Toy_{_name}_Config", __base__=ToyConfig, __module__=__name__, name=(Literal[_name], _name)
    )
    TOY_CONFIGS[_name] = DATASETS.register(_name, summary=_summary, paper="")(_config)
