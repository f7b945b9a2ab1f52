"""The denoiser seam: a network + a schedule + its prediction type.

Methods never look at what a network outputs: they ask the denoiser for `velocity`, `x0`
or `eps` at (x_t, t), and the schedule converts.
"""

from __future__ import annotations

from torch import Tensor, nn

from distill.diffusion.schedules import PREDICTIONS, Schedule, make_schedule


class Denoiser(nn.Module):
    """Wraps `net(x_t: (B, D), t: (B,)) -> (B, D)` trained to predict `prediction`."""

    def __init__(self, net: nn.Module, schedule: str | Schedule = "flow",
                 prediction: str = "velocity") -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.net = net
        self.schedule = make_schedule(schedule) if isinstance(schedule, str) else schedule
        self.prediction = prediction

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The raw network output (of type `self.prediction`)."""
        return self.net(x_t, t)

    def predict(self, x_t: Tensor, t: Tensor, kind: str) -> Tensor:
        return self.schedule.convert(x_t, t, self(x_t, t), self.prediction, kind)

    def velocity(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.predict(x_t, t, "velocity")

    def x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.predict(x_t, t, "x0")

    def eps(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.predict(x_t, t, "eps")
