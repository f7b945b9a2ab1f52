"""What every dataset produces (`PointData`) and the config base class datasets register."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict


@dataclass
class PointData:
    """A point-cloud dataset split into training and held-out points.

    train: (N, D) float32, the points the teacher/student are trained on.
    test: (M, D) float32, a held-out reference set drawn independently, used only for evaluation.
    modes: (K, D) mixture centres when the distribution is a known Gaussian mixture, else None.
    mode_std: per-coordinate standard deviation of each mixture component, else None.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    modes: torch.Tensor | None = None
    mode_std: float | None = None

    @property
    def dim(self) -> int:
        """D, the dimension of one point."""
        return int(self.train.shape[1])


class DatasetConfig(BaseModel):
    """Base of every registered dataset config; subclasses narrow `name` to a `Literal`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str

    def build(self) -> PointData:
        """Load or sample the dataset this config describes."""
        raise NotImplementedError(f"{type(self).__name__} does not implement build()")
