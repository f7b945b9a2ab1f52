"""A differentiable 2-D Gaussian-splat renderer: the parametric "scene" that score
distillation optimises through an image teacher (DreamFusion's NeRF, at the scale of 8x8
digits).

Each prompt (a class label) owns K splats with a centre, a scale and an opacity; a pixel's
intensity is their alpha composite, 1 - prod_k (1 - o_k G_k(p)) (white splats over a black
background, front-to-back "over" compositing as in Gaussian splatting, Kerbl et al. 2023, with
one colour), mapped to the data range [-1, 1].
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from distill.registry import MODELS


class GaussianSplats(nn.Module):
    """`prompts` images (P, C, H, W) in [-1, 1] rendered from K splats each.

    Parameters (unconstrained, so any optimiser step is valid): `centres` (P, K, 2), mapped by
    tanh into the image square [-1, 1]²; `log_scales` (P, K), the Gaussians' standard
    deviation in the same units (one pixel = 2 / W); `opacity_logits` (P, K). The buffer
    `labels` (P,) holds each prompt's class."""

    def __init__(self, labels: Tensor, shape: tuple[int, int, int], splats: int,
                 init_scale: float, init_spread: float, seed: int) -> None:
        super().__init__()
        channels, height, width = shape
        generator = torch.Generator().manual_seed(seed)
        prompts = len(labels)
        self.shape, self.splats = shape, splats
        self.register_buffer("labels", labels.clone().long())
        spread = math.atanh(min(init_spread, 0.999))
        self.centres = nn.Parameter((torch.rand(prompts, splats, 2, generator=generator) * 2 - 1) * spread)
        self.log_scales = nn.Parameter(torch.full((prompts, splats), math.log(init_scale)))
        self.opacity_logits = nn.Parameter(torch.zeros(prompts, splats))
        self.register_buffer("pixels", pixel_grid(height, width), persistent=False)

    def forward(self, index: Tensor | None = None) -> Tensor:
        """Renders of the prompts in `index` (all when None): (len(index), C, H, W)."""
        centres, log_scales, opacity = self.centres, self.log_scales, self.opacity_logits
        if index is not None:
            centres, log_scales, opacity = centres[index], log_scales[index], opacity[index]
        return render_splats(centres, log_scales, opacity, self.pixels, self.shape)


def pixel_grid(height: int, width: int) -> Tensor:
    """Pixel centres in the image square [-1, 1]², (H*W, 2) as (x, y), row-major."""
    ys = (torch.arange(height) + 0.5) * (2 / height) - 1
    xs = (torch.arange(width) + 0.5) * (2 / width) - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2)


def render_splats(centres: Tensor, log_scales: Tensor, opacity_logits: Tensor, pixels: Tensor,
                  shape: tuple[int, int, int]) -> Tensor:
    """Images (P, C, H, W) in [-1, 1] from unconstrained splat parameters: centres (P, K, 2)
    (tanh into the image square), log_scales (P, K), opacity_logits (P, K); `pixels` from
    `pixel_grid`. A pixel is the alpha composite 1 - prod_k (1 - o_k G_k(p)), mapped to [-1, 1]."""
    mean = torch.tanh(centres)  # (P, K, 2)
    d2 = ((pixels[None, None] - mean[:, :, None]) ** 2).sum(-1)  # (P, K, H*W)
    var = torch.exp(2 * log_scales)[..., None]
    coverage = torch.sigmoid(opacity_logits)[..., None] * torch.exp(-d2 / (2 * var))
    alpha = 1 - torch.prod(1 - coverage, dim=1)  # (P, H*W)
    channels, height, width = shape
    image = (2 * alpha - 1).reshape(-1, 1, height, width)
    return image.expand(-1, channels, -1, -1)


@MODELS.register("gaussian-splats", summary="differentiable 2-D Gaussian-splat renderer, K splats per "
                 "prompted class (score distillation's parametric scene)")
class GaussianSplatsConfig(BaseModel):
    """The renderer a `render` method optimises: `per_class` prompts for each of the teacher's
    classes, `splats` Gaussians each."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["gaussian-splats"] = "gaussian-splats"
    splats: int = Field(12, ge=1, le=256, description="Gaussians per prompt")
    per_class: int = Field(4, ge=1, le=1000, description="prompts (independent renders) per class")
    init_scale: float = Field(0.2, gt=0, le=2, description=(
        "initial standard deviation of every splat, in image units (the image spans [-1, 1])"))
    init_spread: float = Field(0.8, gt=0, lt=1, description=(
        "initial centres are uniform in [-init_spread, init_spread]²"))

    def make_renderer(self, shape: tuple[int, ...], num_classes: int, seed: int) -> GaussianSplats:
        if len(shape) != 3:
            raise ValueError(f"gaussian-splats renders images (C, H, W); the data has samples of shape {shape}")
        labels = torch.arange(num_classes).repeat(self.per_class)  # 0, 1, ..., K-1, 0, 1, ...
        return GaussianSplats(labels, tuple(shape), self.splats, self.init_scale, self.init_spread, seed)
