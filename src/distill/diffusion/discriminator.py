"""Discriminators on a network's features: where to hook a backbone (`default_feature_path`)
and the small head that turns the hooked features into a real-vs-fake logit (DMD2's GAN on the
fake score, LADD's on the frozen teacher)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.errors import ConfigError


def default_feature_path(net: nn.Module, key: str = "method.gan_feature") -> str:
    """Where `gan_feature: auto` hooks the fake score: a UNet's mid block, or the last hidden
    activation of an MLP's layer stack; a ConfigError when the backbone has neither."""
    modules = dict(net.named_modules())
    mid_blocks = [name for name in modules if name.split(".")[-1] == "mid_block"]
    if mid_blocks:  # "model.mid_block" inside the DiffusersNet wrapper
        return min(mid_blocks, key=len)
    layers = modules.get("layers")
    if isinstance(layers, nn.Sequential) and len(layers) >= 2:
        return f"layers.{len(layers) - 2}"
    names = ", ".join(name for name in list(modules)[1:40] if name)
    raise ConfigError(f"{key}: auto finds no feature hook point on this backbone (no "
                      f"mid_block, no MLP layer stack); name one of its module paths: {names}")


def norm_groups(channels: int, min_per_group: int = 4, max_groups: int = 32) -> int:
    """The most GroupNorm groups (<= max_groups) that divide `channels` with at least
    `min_per_group` channels each, so a group never normalises a single value to zero."""
    fits = [g for g in range(1, max_groups + 1) if channels % g == 0 and channels // g >= min_per_group]
    return max(fits, default=1)


class DiscriminatorHead(nn.Module):
    """A small classifier on hooked features (a fake score's, a teacher's) -> logits (B,). DMD2 (Sec. 4.3) puts such a
    head on the fake score's bottleneck, and its code convolves the bottleneck maps (strided
    convolutions, GroupNorm, SiLU) before reducing them to a logit; here, for feature maps
    (B, C, H, W): two 3x3 convolutions (GroupNorm, SiLU; the second with stride 2), an average
    pool and a linear logit. Vectors (B, C) and token sequences (B, L, C) (averaged over the
    L tokens) go through a two-layer MLP. (A head that pooled the maps first stayed at chance
    on digits: its loss never left 2 ln 2.)"""

    def __init__(self, channels: int, spatial: bool, hidden: int = 128) -> None:
        super().__init__()
        self.spatial = spatial
        if spatial:
            groups = norm_groups(channels)
            self.conv = nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.SiLU(),
                nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.GroupNorm(groups, channels), nn.SiLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1))
        else:
            self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    @staticmethod
    def feature_channels(features: Tensor) -> int:
        """C of maps (B, C, H, W) and vectors (B, C); of token sequences (B, L, C), the last."""
        return features.shape[-1] if features.ndim == 3 else features.shape[1]

    def forward(self, features: Tensor) -> Tensor:
        if self.spatial:
            if features.ndim != 4:
                raise ValueError(f"the discriminator head was built for (B, C, H, W) feature maps, "
                                 f"got shape {tuple(features.shape)}")
            return self.conv(features).squeeze(1)
        if features.ndim not in (2, 3):
            raise ValueError(f"the discriminator head was built for (B, C) or (B, L, C) features, "
                             f"got shape {tuple(features.shape)}")
        return self.mlp(features.mean(1) if features.ndim == 3 else features).squeeze(1)
