"""Image backbones from diffusers: a small `UNet2DModel` and a small DiT.

The networks are diffusers models, so a student exported from them loads with
`UNet2DModel.from_pretrained` / `DiTTransformer2DModel.from_pretrained`. Time t in [0, 1] is
passed as diffusers' timestep: 1000 t, or the DDPM index 1000 t - 1 on `vp-discrete`, so
the exported weights follow the convention of diffusers' schedulers (see export.py). A model
built with another `time_scale` takes time_scale * t instead, which no diffusers scheduler
passes: its export carries no scheduler config.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from distill.errors import ConfigError
from distill.models.base import ModelConfig
from distill.registry import MODELS

TRAIN_TIMESTEPS = 1000


def diffusers_timestep(t: Tensor, schedule: str, scale: float = TRAIN_TIMESTEPS) -> Tensor:
    """Diffusers' timestep for t in [0, 1]: the DDPM index on vp-discrete, else scale * t
    (1000 t by default, diffusers' convention)."""
    return t * TRAIN_TIMESTEPS - 1 if schedule == "vp-discrete" else t * scale


def _check_image_shape(shape: tuple[int, ...], in_channels: int | None = None) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ConfigError(f"image backbones take samples of shape (C, H, W); the data has shape "
                          f"{tuple(shape)}: use the mlp backbone for points and vectors")
    channels, height, width = shape
    if height != width:
        raise ConfigError(f"image backbones take square images; the data is {height}x{width}")
    return channels, height, width


class TimeGapEmbedding(nn.Module):
    """The second time of a two-time UNet (flow maps, MeanFlow): t - s through the UNet's own
    sinusoidal projection and a `TimestepEmbedding` MLP, added to the UNet's time embedding
    (MeanFlow embeds (t, t - s) and sums them, Geng et al. 2025, Sec. 4). The embedding of
    t - s is taken relative to that of 0, so it is exactly zero at s = t: the UNet alone is
    then the instantaneous-velocity (s = t) network, a plain diffusers flow model. Its last
    layer starts at zero, so a two-time UNet built from a one-time one starts as it for every s."""

    def __init__(self, unet: nn.Module, time_scale: float = TRAIN_TIMESTEPS) -> None:
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding

        self.time_scale = time_scale
        channels = unet.time_proj.num_channels
        self.proj = unet.time_proj  # parameter-free sinusoids, shared with the UNet
        self.mlp = TimestepEmbedding(channels, unet.time_embedding.linear_2.out_features)
        nn.init.zeros_(self.mlp.linear_2.weight)
        nn.init.zeros_(self.mlp.linear_2.bias)

    def forward(self, gap: Tensor) -> Tensor:
        """(B, D) for gap = t - s: (B,) in [0, 1], in the UNet's timestep units (x time_scale)."""
        both = self.proj(torch.cat([gap, torch.zeros_like(gap)]) * self.time_scale)
        at_gap, at_zero = self.mlp(both.to(self.mlp.linear_1.weight.dtype)).chunk(2)
        return at_gap - at_zero


class DiffusersNet(nn.Module):
    """Adapts a diffusers model to `net(x, t, cond[, s])`: maps t to diffusers' timestep and
    the class label to `class_labels` (the null class K for unconditional calls). A two-time
    net (`gap_embedding`, UNet only) adds the embedding of t - s to the UNet's time embedding
    through a forward hook, so the UNet's own modules and state dict stay diffusers'."""

    def __init__(self, model: nn.Module, schedule: str, conditional: bool, two_time: bool = False,
                 time_scale: float = TRAIN_TIMESTEPS) -> None:
        super().__init__()
        self.model, self.schedule, self.conditional = model, schedule, conditional
        self.two_time, self.time_scale = two_time, time_scale
        self.gap_embedding = TimeGapEmbedding(model, time_scale) if two_time else None
        self._gap: Tensor | None = None
        if two_time:
            model.time_embedding.register_forward_hook(self._add_gap)

    def _add_gap(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        return output if self._gap is None else output + self._gap.to(output.dtype)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None, s: Tensor | None = None) -> Tensor:
        timestep = diffusers_timestep(t, self.schedule, self.time_scale)
        if self.conditional and cond is None:
            raise ValueError("this network is class-conditional: pass class labels")
        if not self.conditional and getattr(self.model.config, "num_embeds_ada_norm", None):
            cond = torch.zeros(t.shape, dtype=torch.long, device=t.device)  # DiT's adaLN needs a label
        if s is not None and not self.two_time:
            raise ValueError("this network takes one time; build it with two_time=True for a second")
        if s is None:
            return self.model(x, timestep, class_labels=cond).sample
        self._gap = self.gap_embedding(t - s)
        try:
            return self.model(x, timestep, class_labels=cond).sample
        finally:
            self._gap = None

    def load_one_time_state(self, state: dict[str, Tensor]) -> None:
        """Load a one-time DiffusersNet's weights into this two-time one; the gap embedding
        keeps its zero-output start, so the net equals the one-time one for every s."""
        extra = [k for k in state if not k.startswith("model.")]
        if extra:
            raise ValueError(f"not a one-time diffusers net's state (unexpected keys {extra[:4]})")
        self.model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})


@MODELS.register("unet", summary="small diffusers UNet2DModel for images (class embeddings for CFG)",
                 paper="Denoising Diffusion Probabilistic Models (Ho et al., 2020)")
class UNetConfig(ModelConfig):
    name: Literal["unet"] = "unet"
    channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1,
                                description="output channels of each resolution level")
    layers_per_block: int = Field(1, gt=0)
    attention: bool = Field(False, description="self-attention blocks at the lowest resolution")
    norm_groups: int = Field(8, gt=0)
    supports_two_time: ClassVar[bool] = True
    supports_experts: ClassVar[bool] = False

    @model_validator(mode="after")
    def _groups_divide(self) -> UNetConfig:
        bad = [c for c in self.channels if c % self.norm_groups]
        if bad:
            raise ValueError(f"every entry of channels must be a multiple of norm_groups="
                             f"{self.norm_groups}; {bad} is not")
        return self

    def check_shape(self, shape: tuple[int, ...]) -> None:
        _, size, _ = _check_image_shape(shape)
        factor = 2 ** (len(self.channels) - 1)
        if size % factor or size < factor:
            works = ", ".join(str(factor * k) for k in range(1, 5))
            raise ConfigError(
                f"a UNet with {len(self.channels)} levels (student/teacher channels="
                f"{self.channels}) halves the image {len(self.channels) - 1} times, so it takes "
                f"sizes that are multiples of {factor} ({works}, ...); the data is {size}x{size}. "
                "Change the number of levels or the data size.")

    def build(self, shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
        from diffusers import UNet2DModel

        channels, size, _ = _check_image_shape(shape)
        levels = len(self.channels)
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        if self.attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        model = UNet2DModel(
            sample_size=size, in_channels=channels, out_channels=channels,
            block_out_channels=tuple(self.channels), layers_per_block=self.layers_per_block,
            down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=self.norm_groups,
            num_class_embeds=num_classes + 1 if num_classes else None)
        return DiffusersNet(model, self.schedule, conditional=bool(num_classes), two_time=self.two_time,
                            time_scale=self.time_scale)


@MODELS.register("dit", summary="small diffusers DiT (patch transformer with adaLN-Zero) for images",
                 paper="Scalable Diffusion Models with Transformers (Peebles & Xie, 2023)")
class DiTConfig(ModelConfig):
    name: Literal["dit"] = "dit"
    patch_size: int = Field(2, gt=0)
    layers: int = Field(4, gt=0)
    heads: int = Field(4, gt=0)
    head_dim: int = Field(32, gt=0)
    supports_experts: ClassVar[bool] = False

    def check_shape(self, shape: tuple[int, ...]) -> None:
        _, size, _ = _check_image_shape(shape)
        if size % self.patch_size:
            raise ConfigError(f"DiT patch_size={self.patch_size} must divide the image size "
                              f"{size}; use a patch size among "
                              f"{[p for p in range(1, size + 1) if size % p == 0]}")

    def build(self, shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
        from diffusers import DiTTransformer2DModel

        channels, size, _ = _check_image_shape(shape)
        # diffusers' label table has num_embeds_ada_norm + 1 rows, the last being its CFG null
        # class: with K classes that null index is K, ours. Its own label dropout is switched
        # off: the teacher method drops labels itself, and a student must see its labels.
        model = DiTTransformer2DModel(
            num_attention_heads=self.heads, attention_head_dim=self.head_dim, in_channels=channels,
            out_channels=channels, num_layers=self.layers, sample_size=size,
            patch_size=self.patch_size, num_embeds_ada_norm=num_classes or 1, norm_num_groups=1)
        disable_label_dropout(model)
        return DiffusersNet(model, self.schedule, conditional=bool(num_classes), time_scale=self.time_scale)


def disable_label_dropout(model: nn.Module) -> None:
    """Set diffusers' LabelEmbedding.dropout_prob to 0 everywhere (DiT drops labels in
    train mode by default)."""
    for module in model.modules():
        if hasattr(module, "dropout_prob") and hasattr(module, "embedding_table"):
            module.dropout_prob = 0.0
