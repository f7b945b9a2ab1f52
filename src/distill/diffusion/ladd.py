"""Latent adversarial diffusion distillation (LADD; Sauer et al. 2024), the adversarial term
SANA-Sprint (Chen et al. 2025) adds to sCM: the discriminator is the frozen teacher itself,
read at a hidden layer by a forward hook, with a small trainable head on its features.
Generated and real samples are both re-noised to the same t' before the teacher sees them,
so the teacher's features at that noise level decide real vs fake; hinge losses

    L_D = E[relu(1 - D(real_t'))] + E[relu(1 + D(fake_t'))],   L_G = -E[D(fake_t')].

Implemented: one feature hook on the teacher (`feature`, auto: a UNet's mid block or an MLP's
last hidden layer), DMD2's discriminator head on it, t' ~ U[t_min, t_max], the hinge losses.
Not implemented: SANA-Sprint's several heads on several transformer blocks (one hook here) and
its logit-normal t' proposal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.discriminator import DiscriminatorHead, default_feature_path
from distill.errors import ConfigError
from distill.kd.hooks import FeatureTaps


class AdversarialConfig(BaseModel):
    """The `adversarial` section of a method that takes LADD's term (weight 0: off)."""

    model_config = ConfigDict(extra="forbid")
    weight: float = Field(0.0, ge=0, description="lambda_adv of the generator's hinge loss (0: off)")
    lr: float | None = Field(None, gt=0, description="learning rate of the discriminator head (default train.lr)")
    feature: str = Field("auto", description=(
        "module path in the teacher's network whose output feeds the head; auto: the UNet's mid "
        "block, or the last hidden layer of an MLP"))
    t_min: float = Field(0.02, ge=0, lt=1, description="smallest noise time t' of the discriminator")
    t_max: float = Field(0.98, gt=0, le=1, description="largest noise time t' of the discriminator")

    @model_validator(mode="after")
    def _times(self) -> AdversarialConfig:
        if self.t_min >= self.t_max:
            raise ValueError(f"adversarial.t_min ({self.t_min}) must be below t_max ({self.t_max})")
        return self


class TeacherDiscriminator(nn.Module):
    """A trainable head on the frozen teacher's features at `cfg.feature`; `logits(x0, t')`
    re-noises samples x0 (B, ...) to t' (B,) and returns D: (B,)."""

    def __init__(self, cfg: AdversarialConfig, teacher: Denoiser, shape: tuple[int, ...],
                 labels: Tensor | None = None) -> None:
        super().__init__()
        self.cfg, self.schedule = cfg, teacher.schedule
        self._teacher = [teacher]  # not a submodule: the teacher stays out of this module's state
        self.path = default_feature_path(teacher.net, "method.adversarial.feature") if cfg.feature == "auto" else cfg.feature
        self.taps = FeatureTaps(teacher.net, [self.path], role="the teacher (method.adversarial.feature)")
        with torch.no_grad():
            teacher.x0(torch.zeros(2, *shape), torch.full((2,), 0.5), labels)
        probed = self.taps[self.path]
        if probed.ndim not in (2, 3, 4):
            raise ConfigError(f"method.adversarial.feature {self.path!r} outputs shape {tuple(probed.shape)}; "
                              "the head reads (B, C), (B, L, C) or (B, C, H, W): name another module")
        self.head = DiscriminatorHead(DiscriminatorHead.feature_channels(probed), spatial=probed.ndim == 4)

    def noise_times(self, n: int, device: torch.device) -> Tensor:
        return self.cfg.t_min + (self.cfg.t_max - self.cfg.t_min) * torch.rand(n, device=device)

    def logits(self, x0: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        """D at x0 re-noised to t; gradients reach x0 through the frozen teacher."""
        self._teacher[0].x0(self.schedule.add_noise(x0, torch.randn_like(x0), t), t, labels)
        return self.head(self.taps[self.path])

    def generator_loss(self, fake: Tensor, labels: Tensor | None) -> Tensor:
        """weight * -E[D(fake_t')] for generator samples fake (B, ...) carrying their gradient."""
        t = self.noise_times(len(fake), fake.device)
        return self.cfg.weight * -self.logits(fake, t, labels).mean()

    def discriminator_loss(self, fake: Tensor, real: Tensor, labels: Tensor | None,
                           real_labels: Tensor | None) -> Tensor:
        """Hinge loss of the head on real data (B, ...) vs generator samples (B, ...) (no grad
        to the generator), each re-noised to its own t'."""
        t_fake = self.noise_times(len(fake), fake.device)
        t_real = self.noise_times(len(real), real.device)
        fake_logits = self.logits(fake.detach(), t_fake, labels)
        real_logits = self.logits(real, t_real, real_labels)
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def build_discriminator(cfg: AdversarialConfig, teacher: Denoiser, shape: tuple[int, ...],
                        labels: Tensor | None = None) -> TeacherDiscriminator | None:
    """The teacher discriminator, or None when the adversarial weight is 0."""
    return TeacherDiscriminator(cfg, teacher, shape, labels) if cfg.weight > 0 else None
