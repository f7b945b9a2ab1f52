"""Noise schedules and conversions between prediction types.

Every schedule writes the noisy sample as x_t = alpha(t) * x0 + sigma(t) * eps for t in
[0, 1] (t = 0 is data, t = 1 is noise) and its velocity as v = dx_t/dt =
alpha'(t) * x0 + sigma'(t) * eps. Given x_t and any one of x0, eps or v, the other two follow
by solving that 2x2 linear system, so conversions are written once for all schedules.

Implemented here: the flow-matching (rectified flow) schedule of Lipman et al. 2023 and
Liu et al. 2023: alpha = 1 - t, sigma = t, so v = eps - x0.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Prediction = Literal["velocity", "x0", "eps"]
PREDICTIONS: tuple[str, ...] = ("velocity", "x0", "eps")


def _expand(t: Tensor, like: Tensor) -> Tensor:
    """Broadcast a per-sample time t: (B,) against x: (B, ...)."""
    return t.reshape(t.shape + (1,) * (like.ndim - t.ndim))


class Schedule:
    """x_t = alpha(t) x0 + sigma(t) eps. Subclasses give alpha, sigma and their derivatives."""

    name: str = "base"

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t for x0, eps: (B, ...), t: (B,)."""
        return _expand(self.alpha(t), x0) * x0 + _expand(self.sigma(t), x0) * eps

    def velocity_target(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """v = alpha'(t) x0 + sigma'(t) eps."""
        return _expand(self.d_alpha(t), x0) * x0 + _expand(self.d_sigma(t), x0) * eps

    def to_x0_eps(self, x_t: Tensor, t: Tensor, output: Tensor, prediction: str) -> tuple[Tensor, Tensor]:
        """(x0, eps) implied by a network `output` of the given prediction type at (x_t, t)."""
        a, s = _expand(self.alpha(t), x_t), _expand(self.sigma(t), x_t)
        if prediction == "x0":
            return output, (x_t - a * output) / s
        if prediction == "eps":
            return (x_t - s * output) / a, output
        if prediction == "velocity":
            da, ds = _expand(self.d_alpha(t), x_t), _expand(self.d_sigma(t), x_t)
            det = a * ds - s * da
            return (ds * x_t - s * output) / det, (a * output - da * x_t) / det
        raise ValueError(f"unknown prediction type {prediction!r}; use one of {PREDICTIONS}")

    def convert(self, x_t: Tensor, t: Tensor, output: Tensor, source: str, target: str) -> Tensor:
        """Convert a prediction of type `source` into type `target` at (x_t, t)."""
        if source == target:
            return output
        x0, eps = self.to_x0_eps(x_t, t, output, source)
        if target == "x0":
            return x0
        if target == "eps":
            return eps
        if target == "velocity":
            return self.velocity_target(x0, eps, t)
        raise ValueError(f"unknown prediction type {target!r}; use one of {PREDICTIONS}")


class FlowSchedule(Schedule):
    """Flow matching / rectified flow: x_t = (1 - t) x0 + t eps, v = eps - x0."""

    name = "flow"

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - t

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)


SCHEDULES: dict[str, type[Schedule]] = {"flow": FlowSchedule}


def make_schedule(name: str) -> Schedule:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; available: {', '.join(SCHEDULES)}")
    return SCHEDULES[name]()
