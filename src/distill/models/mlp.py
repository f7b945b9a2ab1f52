"""MLP denoiser backbone for low-dimensional data (toy 2D points, small flattened images)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from distill.diffusion.momentum_policy import initial_rates, packed_size
from distill.models.base import ModelConfig
from distill.models.flow_head import FlowHeadMLP
from distill.models.time_embedding import sinusoidal_embedding
from distill.registry import MODELS


class TimeMLP(nn.Module):
    """x: (B, *shape), t: (B,), cond: (B,) | None[, s: (B,)] -> (B, *shape). x is flattened;
    time enters as a sinusoidal embedding (its fastest feature turning at `time_scale` radians
    per unit time) and the class as a learned embedding, concatenated to x. A `two_time`
    network also embeds t - s (MeanFlow's choice, Geng et al. 2025, Sec. 4), appended last, so
    that a one-time network's weights load into it with zero weights on the new inputs
    (`load_one_time_state`). A `policy_components` = K > 0 network outputs an ArcFlow
    momentum-mixture policy instead, (B, packed_size(shape, K)) (`momentum_policy.py`)."""

    def __init__(self, shape: tuple[int, ...], hidden: int, depth: int, time_dim: int,
                 activation: str = "silu", num_classes: int | None = None, two_time: bool = False,
                 time_scale: float = 1000.0, policy_components: int = 0) -> None:
        super().__init__()
        self.shape, self.time_dim, self.two_time = tuple(shape), time_dim, two_time
        self.time_scale, self.policy_components = time_scale, policy_components
        dim = math.prod(shape)
        act = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU}[activation]
        self.class_embedding = nn.Embedding(num_classes + 1, time_dim) if num_classes else None
        layers: list[nn.Module] = []
        width = dim + time_dim * (2 if num_classes else 1) + (time_dim if two_time else 0)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), act()]
            width = hidden
        out = packed_size(self.shape, policy_components) if policy_components else dim
        layers.append(nn.Linear(width, out))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None, s: Tensor | None = None) -> Tensor:
        parts = [x.flatten(1), self.embed_time(t).to(x.dtype)]
        if self.class_embedding is not None:
            if cond is None:
                raise ValueError("this network is class-conditional: pass class labels")
            parts.append(self.class_embedding(cond).to(x.dtype))
        if self.two_time:
            parts.append(self.embed_time(t - (t if s is None else s)).to(x.dtype))
        elif s is not None:
            raise ValueError("this network takes one time; build it with two_time=True for a second")
        out = self.layers(torch.cat(parts, dim=1))
        return out if self.policy_components else out.reshape(x.shape)

    def embed_time(self, t: Tensor) -> Tensor:
        """(B,) -> (B, time_dim)."""
        return sinusoidal_embedding(t, self.time_dim, scale=self.time_scale)

    def load_one_time_state(self, state: dict[str, Tensor]) -> None:
        """Load a one-time TimeMLP's weights: the first layer's weights on the t - s embedding
        start at zero, so the output is the one-time network's for every s."""
        first = "layers.0.weight"
        own = self.layers[0].weight
        if state[first].shape[1] + self.time_dim != own.shape[1]:
            raise ValueError(f"{first}: {tuple(state[first].shape)} does not fit {tuple(own.shape)} "
                             "less one time embedding")
        padded = torch.cat([state[first], own.new_zeros(own.shape[0], self.time_dim)], dim=1)
        self.load_state_dict({**state, first: padded})


    def load_one_output_state(self, state: dict[str, Tensor]) -> None:
        """Load a one-prediction (velocity) TimeMLP's weights into this policy network: every
        component's mean gets the teacher's output layer, the weight logits zero (uniform
        weights) and the rates `initial_rates`, so the policy's velocity at its source time is
        the teacher's."""
        last = f"layers.{len(self.layers) - 1}"
        weight, bias = state[f"{last}.weight"], state[f"{last}.bias"]
        k, hidden = self.policy_components, weight.shape[1]
        if weight.shape[0] != math.prod(self.shape):
            raise ValueError(f"{last}.weight: {tuple(weight.shape)} is not a one-prediction output layer "
                             f"for samples of shape {self.shape}")
        new_weight = torch.cat([weight.repeat(k, 1), weight.new_zeros(2 * k - 1, hidden)])
        new_bias = torch.cat([bias.repeat(k), bias.new_zeros(k), initial_rates(k).to(bias)])
        self.load_state_dict({**state, f"{last}.weight": new_weight, f"{last}.bias": new_bias})


@MODELS.register("mlp", summary="MLP with sinusoidal time embedding, for points and small vectors")
class MLPConfig(ModelConfig):
    name: Literal["mlp"] = "mlp"
    hidden: int = Field(256, gt=0)
    depth: int = Field(4, gt=0)
    time_dim: int = Field(32, gt=0, multiple_of=2)
    activation: Literal["silu", "relu", "gelu"] = "silu"
    flow_head: int = Field(0, ge=0, description=(
        "L > 0: the last L hidden layers and the output layer form a flow head run "
        "`inner_steps` times per call on the trunk's features (tmd students, "
        "`distill.models.flow_head`); initialised from a plain teacher, it starts as the teacher"))
    inner_steps: int = Field(1, ge=1, le=64, description="the flow head's inner Euler steps per call")
    supports_two_time: ClassVar[bool] = True
    supports_policy: ClassVar[bool] = True

    @model_validator(mode="after")
    def _flow_head(self) -> MLPConfig:
        if self.flow_head and (self.two_time or self.policy_components or self.experts > 1):
            raise ValueError("flow_head > 0 does not combine with two_time, policy_components or experts > 1")
        if self.flow_head >= self.depth:
            raise ValueError(f"flow_head takes 1 to depth - 1 = {self.depth - 1} hidden layers, not {self.flow_head}")
        if self.inner_steps > 1 and not self.flow_head:
            raise ValueError("inner_steps > 1 needs a flow head (flow_head > 0)")
        return self

    def build(self, shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
        if self.flow_head:
            return FlowHeadMLP(shape, self.hidden, self.depth, self.time_dim, self.activation, num_classes,
                               self.time_scale, self.flow_head, self.inner_steps)
        return TimeMLP(shape, self.hidden, self.depth, self.time_dim, self.activation, num_classes,
                       self.two_time, self.time_scale, self.policy_components)
