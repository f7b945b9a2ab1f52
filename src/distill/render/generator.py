"""A few-step generator of renderer parameters: the student of progressive rendering
distillation (`distill.render.methods.prd`).

Where `gaussian-splats` holds one set of splat parameters per prompt (optimised per sample by
SDS/VSD), this network denoises a latent into splat parameters for any noise and class, so a
new render costs `sample_steps` forward passes instead of an optimisation. It stands in for
TriplaneTurbo's adapted Stable Diffusion U-Net (Ma et al., CVPR 2025), whose denoised latent is
decoded into a triplane: here the latent is the splats' unconstrained parameters themselves,
(K, 4) per render (centre x, centre y, log-scale offset, opacity logit), and decoding is the
splat renderer (`distill.render.splats.render_splats`).

The latent follows its own variance-preserving diffusion, z_t = α_t z_0 + σ_t ε with
α_t = cos(πt/2), σ_t = sin(πt/2), t ∈ [0, 1]; the network predicts z_0 (x0-prediction: at t = 1
the input is pure noise). Sampling (`sample`) starts from noise at t = 1 and at each of its
steps predicts z_0, re-noised with fresh noise to the next time (the DDPM-style ancestral step
TriplaneTurbo samples with, with x0 known: the same re-noising its training uses).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from distill.registry import MODELS
from distill.render.splats import pixel_grid, render_splats

PARAMS_PER_SPLAT = 4  # centre x, centre y, log-scale offset, opacity logit
SAMPLE_NOISE_SEED = 1 << 31  # the sampler's inner noise: far from the prompts' noise seeds


def latent_alpha(t: Tensor) -> Tensor:
    return torch.cos(0.5 * math.pi * t)


def latent_sigma(t: Tensor) -> Tensor:
    return torch.sin(0.5 * math.pi * t)


def time_features(t: Tensor, count: int = 16) -> Tensor:
    """Sinusoidal features of t: (N,) -> (N, count)."""
    frequencies = torch.exp(torch.linspace(0, math.log(100.0), count // 2, device=t.device))
    angles = t[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class SplatGenerator(nn.Module):
    """A denoiser of splat-parameter latents (N, K, 4), conditioned on time and class, with the
    prompts it renders at evaluation: `labels` (P,) and their fixed start noise `noise`
    (P, K, 4), so `forward()` returns the same P renders every call, like `GaussianSplats`."""

    def __init__(self, labels: Tensor, shape: tuple[int, int, int], num_classes: int, splats: int,
                 hidden: int, depth: int, init_scale: float, sample_steps: int, seed: int) -> None:
        super().__init__()
        channels, height, width = shape
        self.shape, self.splats, self.sample_steps = shape, splats, sample_steps
        self.log_scale_offset = math.log(init_scale)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("labels", labels.clone().long())
        self.register_buffer("noise", torch.randn(len(labels), splats, PARAMS_PER_SPLAT, generator=generator))
        # and the re-noising between their sampling steps, so a prompt renders alike in any subset
        self.register_buffer("inner_noise", torch.randn(sample_steps - 1, len(labels), splats, PARAMS_PER_SPLAT,
                                                        generator=generator))
        self.register_buffer("pixels", pixel_grid(height, width), persistent=False)
        width_in = splats * PARAMS_PER_SPLAT
        self.class_embedding = nn.Embedding(num_classes, 32)
        layers: list[nn.Module] = [nn.Linear(width_in + 16 + 32, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, width_in))
        self.net = nn.Sequential(*layers)
        for module in [*self.net, self.class_embedding]:  # initial weights follow train.seed too
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, generator=generator)

    def predict_latent(self, z_t: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        """The denoised latent z_0 from z_t (N, K, 4) at times t (N,) for classes `labels` (N,)."""
        inputs = torch.cat([z_t.flatten(1), time_features(t), self.class_embedding(labels)], dim=1)
        return self.net(inputs).view_as(z_t)

    def decode(self, latent: Tensor) -> Tensor:
        """Renders (N, C, H, W) of splat-parameter latents (N, K, 4)."""
        return render_splats(latent[..., :2], self.log_scale_offset + latent[..., 2], latent[..., 3],
                             self.pixels, self.shape)

    def sample(self, noise: Tensor, labels: Tensor, steps: int, inner_noise: Tensor | None = None,
               seed: int = SAMPLE_NOISE_SEED) -> Tensor:
        """Denoised latents (N, K, 4) from start noise (N, K, 4) in `steps` forward passes at
        t_k = 1 - k/steps; the re-noising between steps uses `inner_noise` (steps - 1, N, K, 4),
        or draws from a generator seeded `seed`."""
        generator = torch.Generator(device=noise.device).manual_seed(seed)
        z = noise
        times = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
        for k in range(steps):
            latent = self.predict_latent(z, times[k].expand(len(z)), labels)
            if k + 1 < steps:
                eps = inner_noise[k] if inner_noise is not None else \
                    torch.randn(z.shape, generator=generator, device=z.device)
                z = latent_alpha(times[k + 1]) * latent + latent_sigma(times[k + 1]) * eps
        return latent

    def forward(self, index: Tensor | None = None) -> Tensor:
        """Renders of the evaluation prompts in `index` (all when None) from their fixed noise,
        in `sample_steps` steps: (len(index), C, H, W)."""
        noise, labels, inner = self.noise, self.labels, self.inner_noise
        if index is not None:
            noise, labels, inner = noise[index], labels[index], inner[:, index]
        return self.decode(self.sample(noise, labels, self.sample_steps, inner))


@MODELS.register("splat-generator", summary="few-step denoiser of Gaussian-splat parameters for any noise and "
                 "class (progressive rendering distillation's student)")
class SplatGeneratorConfig(BaseModel):
    """The student `prd` trains: a network that renders `per_class` evaluation prompts per class
    (and any number of new ones) in `sample_steps` forward passes."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["splat-generator"] = "splat-generator"
    splats: int = Field(12, ge=1, le=256, description="Gaussians per render")
    per_class: int = Field(4, ge=1, le=1000, description="evaluation renders per class")
    hidden: int = Field(256, ge=8, le=4096)
    depth: int = Field(3, ge=1, le=16)
    init_scale: float = Field(0.2, gt=0, le=2, description=(
        "splat standard deviation at a zero log-scale latent, in image units (the image spans [-1, 1])"))
    sample_steps: int = Field(4, ge=1, le=64, description=(
        "forward passes per render at evaluation (1: one pass from noise)"))

    def make_renderer(self, shape: tuple[int, ...], num_classes: int, seed: int) -> SplatGenerator:
        if len(shape) != 3:
            raise ValueError(f"splat-generator renders images (C, H, W); the data has samples of shape {shape}")
        labels = torch.arange(num_classes).repeat(self.per_class)  # 0, 1, ..., K-1, 0, 1, ...
        return SplatGenerator(labels, tuple(shape), num_classes, self.splats, self.hidden, self.depth,
                              self.init_scale, self.sample_steps, seed)
