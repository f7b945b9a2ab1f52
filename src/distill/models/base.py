"""What every registered backbone config provides."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from torch import nn


class ModelConfig(BaseModel):
    """A registered backbone: `build(dim)` returns `net(x: (B, dim), t: (B,)) -> (B, dim)`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    prediction: Literal["velocity", "x0", "eps"] = "velocity"
    schedule: Literal["flow"] = "flow"
    init: Literal["random", "teacher"] = "random"

    def build(self, dim: int) -> nn.Module:
        raise NotImplementedError
