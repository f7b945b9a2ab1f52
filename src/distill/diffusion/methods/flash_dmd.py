"""Flash-DMD (Chen et al., CVPR 2026): timestep-aware distribution matching with a GAN at the
low-noise steps, and reward fine-tuning joined to the distillation that continues beside it
(`dmd-flash`)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.distribution_matching import (
    DMD2,
    DMD2Config,
    distribution_matching_loss,
)
from distill.diffusion.reward import RealismReward, RewardConfig, build_reward_model
from distill.registry import METHODS


class FlashDMDConfig(DMD2Config):
    name: Literal["dmd-flash"] = "dmd-flash"  # type: ignore[assignment]
    student_steps: int = Field(4, ge=1, description="generator steps (the paper distils to 4)")
    split: float = Field(0.5, ge=0, le=1, description=(
        "the timestep-aware split: rows whose generator step starts at t >= split (high noise) "
        "follow the distribution-matching gradient alone, rows below it the GAN alone; 0: every "
        "row follows distribution matching (no split)"))
    gan_weight: float = Field(0.1, ge=0, description=(
        "weight of the GAN loss on the low-noise rows (a discriminator head on the fake score's "
        "features)"))
    reward: RewardConfig = Field(default_factory=RewardConfig, description=(
        "the joint RL stage: weight of -reward on the generator's samples from `reward.start` on, "
        "and the realism reward model's settings (weight 0: distillation only)"))
    distill_during_rl: bool = Field(True, description=(
        "keep the distillation losses on once the reward term starts (Flash-DMD's joint scheme); "
        "false: reward alone from reward.start on (the RL fine-tuning Flash-DMD improves on)"))

    @model_validator(mode="after")
    def _split_needs_gan(self) -> FlashDMDConfig:
        if self.split > 0 and self.gan_weight == 0:
            raise ValueError(f"split={self.split} hands the low-noise steps to the GAN, but gan_weight "
                             "is 0: set gan_weight > 0, or split: 0 for distribution matching everywhere")
        if self.split >= 1 and self.student_steps == 1:
            raise ValueError("a one-step generator starts every row at t = 1: split=1 would give "
                             "every row to the GAN; use split < 1")
        return self


@METHODS.register("dmd-flash", summary="Flash-DMD: DM loss at high-noise steps, GAN at low-noise steps, joint reward tuning",
                  paper="Flash-DMD: Towards High-Fidelity Few-Step Image Generation with Efficient Distillation and Joint Reinforcement Learning (Chen et al., CVPR 2026)")
class FlashDMD(DMD2):
    """Chen et al. 2026 (Flash-DMD), built on DMD2 (`distribution_matching.DMD2`).

    Stage 1, timestep-aware distillation: the K-step generator's rows are split by the time
    t_k their step starts from. Rows with t_k >= `split` (global structure) follow only the
    distribution-matching gradient; rows below it (detail) follow only the GAN's
    non-saturating loss, so the two gradients never meet on one sample (the paper's fix for
    DMD2's gradient conflict).
    Stage 2, joint RL: from trainer step `reward.start`, the generator also minimises
    -`reward.weight` · r(G(z)) on its samples (every row's x0 prediction), while stage 1's
    losses continue as the regulariser against reward hacking. `distill_during_rl: false` is
    the ablation: reward alone after the switch.

    Not implemented, and why: the paper's discriminator is a SAM-feature pixel-space GAN (no
    SAM here; the head reads the fake score's features as in DMD2); its RL algorithm on a
    latent reward model (its code is unreleased) — here the reward's gradient is taken
    directly through the generator (ReFL-style), on the realism reward of
    `distill.diffusion.reward`; its stabilised score estimator (not described in enough detail
    to reproduce).
    """

    Config = FlashDMDConfig
    cfg: FlashDMDConfig

    def __init__(self, cfg: FlashDMDConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, total_steps: int | None = None, **kw: object) -> None:
        super().__init__(cfg, student, teacher, data, seed=seed, total_steps=total_steps, **kw)
        # kept out of the module tree: a frozen model rebuilt from the config, never checkpointed
        self._reward = [build_reward_model(cfg.reward, data)] if cfg.reward.enabled else []

    @property
    def reward_model(self) -> RealismReward | None:
        return self._reward[0] if self._reward else None

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        if group == "fake_score":
            return super().forward(batch, group, step)
        rows = next(iter(batch.values()))
        n, device = len(rows), rows.device
        labels = self.labels_for(n, batch, device)
        rl = self.reward_model is not None and step >= self.cfg.reward.start
        x, t_in = self.generate_with_times(n, labels, device)
        losses = {}
        if self.cfg.distill_during_rl or not rl:
            losses.update(self.split_losses(x, t_in, labels))
        if rl:
            self.reward_model.to(device)
            losses["reward"] = -self.cfg.reward.weight * self.reward_model(x).mean()
        if self.embedding is not None:
            losses["embedding"] = self.embedding(x, batch)
        return losses

    def split_losses(self, x: Tensor, t_in: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """Distribution matching on the rows starting at t_in >= split, the generator's GAN loss
        on the others; each averaged over all rows (a row's share of the batch is its weight)."""
        high = (t_in >= self.cfg.split).float()
        t = self.score_times(len(x), x.device)
        x_t = self.student.schedule.add_noise(x, torch.randn_like(x), t)
        with torch.no_grad():
            real_x0 = self.real_x0(x_t, t, labels)
        losses = {}
        if self.head is not None and (high < 1).any():
            fake_x0, logits = self.discriminate(x_t, t, labels)
            losses["gan"] = self.cfg.gan_weight * (F.softplus(-logits).flatten() * (1 - high)).mean()
        else:
            with torch.no_grad():
                fake_x0 = self.fake.x0(x_t, t, labels)
        losses["distribution_matching"] = distribution_matching_loss(
            x, real_x0, fake_x0.detach(), sample_weight=high)
        return losses
