"""The denoiser seam: a network + a schedule + its prediction type (+ class conditioning).

Methods never look at what a network outputs: they ask the denoiser for `velocity`, `x0`,
`eps` or `score` at (x_t, t, cond), with classifier-free guidance applied here and nowhere
else, and the schedule converts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.diffusion.momentum_policy import MomentumPolicy
from distill.diffusion.schedules import (
    PREDICTIONS,
    QUANTITIES,
    Schedule,
    expand_time,
    make_schedule,
)
from distill.errors import ConfigError

PRECONDITIONINGS: tuple[str, ...] = ("none", "edm")


class Denoiser(nn.Module):
    """Wraps `net(x_t: (B, ...), t: (B,), cond: (B,) long | None) -> (B, ...)`.

    prediction: what the network is trained to output ("velocity", "x0" or "eps").
    num_classes: K for a class-conditional network, whose label K is the null class used for
        unconditional predictions and classifier-free guidance; None for an unconditional one.
    preconditioning: "edm" wraps the network as D(x) = c_skip x + c_out F(c_in x, t)
        (Karras et al. 2022, Eq. 7 and Table 1), with sigma = sigma(t) / alpha(t) and x scaled
        by 1 / alpha(t), so it applies to every schedule; the denoiser then predicts x0.
        The network's noise input is t itself rather than c_noise = ln(sigma) / 4: both are
        monotone in sigma, and every backbone here embeds t in [0, 1].
    """

    def __init__(self, net: nn.Module, schedule: str | Schedule = "flow",
                 prediction: str = "velocity", num_classes: int | None = None,
                 preconditioning: str = "none", sigma_data: float = 0.5) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if preconditioning not in PRECONDITIONINGS:
            raise ValueError(f"preconditioning must be one of {PRECONDITIONINGS}, got {preconditioning!r}")
        if preconditioning == "edm" and prediction != "x0":
            raise ValueError("EDM preconditioning makes the denoiser predict x0: set prediction: x0")
        self.net = net
        self.schedule = make_schedule(schedule) if isinstance(schedule, str) else schedule
        self.prediction = prediction
        self.num_classes = num_classes
        self.preconditioning = preconditioning
        self.sigma_data = sigma_data

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    def labels(self, cond: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        """Class labels for the network: `cond`, or the null class when cond is None."""
        if not self.conditional:
            return None
        if cond is None:
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        return cond.long()

    @property
    def two_time(self) -> bool:
        """Whether the network also takes a second time s (a flow map's average velocity)."""
        return bool(getattr(self.net, "two_time", False))

    @property
    def policy_components(self) -> int:
        """K > 0 where the network outputs an ArcFlow momentum-mixture policy (`policy`)."""
        return int(getattr(self.net, "policy_components", 0))

    def policy(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> MomentumPolicy:
        """The velocity over the step starting at (x_t, t) of a policy network (ArcFlow):
        x_t: (B, ...), t: (B,). No guidance: a policy student learns its teacher's guided flow."""
        if not self.policy_components:
            raise ValueError("policy needs a policy network (student.policy_components > 0)")
        out = self.net(x_t, t, self.labels(cond, x_t.shape[0], x_t.device))
        return MomentumPolicy.unpack(out, tuple(x_t.shape[1:]), self.policy_components, t)

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """The raw prediction (of type `self.prediction`) without guidance; a two-time network
        is asked at s = t, where its average velocity is the instantaneous one, and a policy
        network gives its policy's velocity at the time it was asked."""
        labels = self.labels(cond, x_t.shape[0], x_t.device)
        if self.policy_components:
            return self.policy(x_t, t, cond).velocity(t)
        if self.preconditioning == "none":
            return self.net(x_t, t, labels)
        alpha, sigma = expand_time(self.schedule.alpha(t), x_t), expand_time(self.schedule.sigma(t), x_t)
        x_hat, s = x_t / alpha, sigma / alpha
        total = s**2 + self.sigma_data**2
        c_skip, c_out, c_in = self.sigma_data**2 / total, s * self.sigma_data / total.sqrt(), 1 / total.sqrt()
        return c_skip * x_hat + c_out * self.net(c_in * x_hat, t, labels)

    def guided(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None,
               guidance: float = 1.0) -> Tensor:
        """Classifier-free guidance (Ho & Salimans 2022, Eq. 6) in the prediction space:
        out_uncond + w (out_cond - out_uncond); w = 1 is the plain conditional prediction.
        The conversions are affine in the output, so this equals guiding x0, eps or v."""
        if guidance == 1.0:
            return self(x_t, t, cond)
        if not self.conditional:
            raise ConfigError(f"guidance scale {guidance} needs a class-conditional model; this "
                              "one is unconditional (set the guidance scale to 1)")
        if cond is None:
            raise ConfigError(f"guidance scale {guidance} needs class labels to guide towards; "
                              "none were given (unlabelled data?)")
        null = torch.full_like(cond, self.num_classes)
        both = self(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, null]))
        out_cond, out_uncond = both.chunk(2)
        return out_uncond + guidance * (out_cond - out_uncond)

    def predict(self, x_t: Tensor, t: Tensor, kind: str, cond: Tensor | None = None,
                guidance: float = 1.0) -> Tensor:
        """The `kind` in QUANTITIES ("velocity", "x0", "eps", "score") at (x_t, t, cond)."""
        if kind not in QUANTITIES:
            raise ValueError(f"unknown quantity {kind!r}; use one of {QUANTITIES}")
        out = self.guided(x_t, t, cond, guidance)
        return self.schedule.convert(x_t, t, out, self.prediction, kind)

    def velocity(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None, guidance: float = 1.0) -> Tensor:
        return self.predict(x_t, t, "velocity", cond, guidance)

    def x0(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None, guidance: float = 1.0) -> Tensor:
        return self.predict(x_t, t, "x0", cond, guidance)

    def eps(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None, guidance: float = 1.0) -> Tensor:
        return self.predict(x_t, t, "eps", cond, guidance)

    def score(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None, guidance: float = 1.0) -> Tensor:
        return self.predict(x_t, t, "score", cond, guidance)

    def average_velocity(self, x_t: Tensor, t: Tensor, s: Tensor, cond: Tensor | None = None) -> Tensor:
        """u(x_t, t, s) = (x_t - x_s) / (t - s), the average velocity of the flow from time t to
        s (both (B,)), of a two-time network (flow maps, MeanFlow): x_s = x_t + (s - t) u."""
        if not self.two_time:
            raise ValueError("average_velocity needs a two-time network (student.two_time: true)")
        return self.net(x_t, t, self.labels(cond, x_t.shape[0], x_t.device), s)
