"""ArcFlow's momentum-mixture policy: the velocity of one student step as a function of time.

A policy network evaluated once at (x_src, t_src) does not output one velocity but the
parameters of a velocity *field over the step* (ArcFlow, 2025):

    v(t) = sum_k w_k m_k exp(gamma_k (t_src - t)),      t <= t_src,

K velocity means m_k (each the shape of x), mixture weights w = softmax(logits) shared over
a sample's channels, and K - 1 momentum rates gamma_k (component 0 has rate 0: a constant
velocity), so each component's velocity grows (gamma > 0) or decays (gamma < 0)
exponentially as the step proceeds. Its integral is closed-form,

    x(t_b) = x(t_a) - sum_k w_k m_k exp(gamma_k (t_src - t_a)) (t_a - t_b) phi(gamma_k (t_a - t_b)),
    phi(z) = expm1(z) / z,

so a step follows a curved trajectory with no discretisation error. With K = 1 the policy is
one constant velocity: the linear shortcut of an Euler step.

Packed layout (how a network emits a policy, `unpack`): per sample, K means of x's size,
then K weight logits, then K - 1 rates: `packed_size(shape, K)` numbers in all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from distill.diffusion.schedules import expand_time

RATE_LIMIT = 20.0  # |gamma| per unit time: exp(20 * 1) bounds a component's growth over a whole path


def packed_size(shape: tuple[int, ...], components: int) -> int:
    """Numbers per sample a network outputs for a K-component policy over samples of `shape`."""
    return components * math.prod(shape) + 2 * components - 1


def initial_rates(components: int) -> Tensor:
    """The K - 1 rates a new policy head starts from (its bias): log-spaced magnitudes from
    0.2 to 4 per unit time, their logs used as signed rates as ArcFlow's reference heads do,
    so the components start spread from decaying to growing; (K - 1,)."""
    if components < 2:
        return torch.zeros(0)
    return torch.log(torch.logspace(math.log10(0.2), math.log10(4.0), components - 1))


def phi(z: Tensor) -> Tensor:
    """expm1(z) / z, continued by 1 + z / 2 near z = 0 (where it is 1 to second order)."""
    small = z.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 1 + z / 2, torch.expm1(safe) / safe)


@dataclass
class MomentumPolicy:
    """One step's velocity field. means: (B, K, *shape); logits: (B, K, *ones); rates:
    (B, K - 1, *ones); t_src: (B,) the time the network was asked at."""

    means: Tensor
    logits: Tensor
    rates: Tensor
    t_src: Tensor

    @classmethod
    def unpack(cls, out: Tensor, shape: tuple[int, ...], components: int, t_src: Tensor) -> MomentumPolicy:
        """The policy from a network's packed output (B, packed_size(shape, K))."""
        batch, dim, k = out.shape[0], math.prod(shape), components
        ones = (1,) * len(shape)
        means = out[:, : k * dim].reshape(batch, k, *shape)
        logits = out[:, k * dim: k * dim + k].reshape(batch, k, *ones)
        rates = out[:, k * dim + k:].reshape(batch, k - 1, *ones).clamp(-RATE_LIMIT, RATE_LIMIT)
        return cls(means, logits, rates, t_src)

    @property
    def components(self) -> int:
        return self.means.shape[1]

    def _times(self, t: Tensor) -> Tensor:
        """(B,) -> (B, 1, *ones), broadcasting against the (B, K, ...) parameters."""
        return t.reshape(t.shape[0], *((1,) * (self.means.ndim - 1)))

    def _all_rates(self) -> Tensor:
        """(B, K, *ones): rate 0 for component 0, then the K - 1 learned rates."""
        return torch.cat([torch.zeros_like(self.logits[:, :1]), self.rates], dim=1)

    def velocity(self, t: Tensor) -> Tensor:
        """v(t) = sum_k w_k m_k exp(gamma_k (t_src - t)), t: (B,) -> (B, *shape)."""
        weights = torch.softmax(self.logits, dim=1)
        growth = torch.exp(self._all_rates() * self._times(self.t_src - t))
        return (weights * self.means * growth).sum(1)

    def advance(self, x: Tensor, t_start: Tensor, t_end: Tensor) -> Tensor:
        """x at t_end given x at t_start (both (B,), t_end <= t_start <= t_src), the exact
        integral of `velocity` (ArcFlow's analytic step; see the module docstring)."""
        weights = torch.softmax(self.logits, dim=1)
        rates = self._all_rates()
        span = self._times(t_start - t_end)
        at_start = self.means * torch.exp(rates * self._times(self.t_src - t_start))
        return x - (weights * at_start * span * phi(rates * span)).sum(1)

    def average_velocity(self, x: Tensor, t_start: Tensor, t_end: Tensor) -> Tensor:
        """(x(t_start) - x(t_end)) / (t_start - t_end): the mean velocity over [t_end, t_start]
        (t_start > t_end), in the sign convention of `velocity` (dx/dt)."""
        return (x - self.advance(x, t_start, t_end)) / expand_time(t_start - t_end, x)

    def detach(self) -> MomentumPolicy:
        return MomentumPolicy(self.means.detach(), self.logits.detach(), self.rates.detach(), self.t_src)

    def drop_components(self, p: float) -> MomentumPolicy:
        """Each component's weight zeroed with probability p, per sample (never all of them):
        ArcFlow's reference `gm_dropout` on the rolled-out (detached) policy."""
        if p <= 0 or self.components == 1:
            return self
        drop = torch.rand(self.logits.shape, device=self.logits.device) < p
        drop &= ~drop.all(dim=1, keepdim=True)
        return MomentumPolicy(self.means, self.logits.masked_fill(drop, float("-inf")), self.rates, self.t_src)
