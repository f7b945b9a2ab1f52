"""Embedding loss (EL): a supplementary loss for any few-step distillation method, the squared
maximum mean discrepancy between generator samples and real data in the features of several
randomly initialised, frozen networks (Efficient Diffusion Distillation via Embedding Loss,
2025). A method with an `embedding_loss` section in its config adds

    L_EL = weight * mean_k MMD²_u(phi_k(G(z)), phi_k(x_data)),

where phi_k is the k-th random network and MMD²_u the unbiased estimate with a sum of Gaussian
kernels whose bandwidths are multiples of the batch's median feature distance.

Implemented: the loss on the generator's x0 samples against a batch of real samples, a set of
`networks` random embedders of varied depth (MLPs on vectors; strided convolutional nets
pooled to 4x4 maps on images), each seeded from `seed` and never trained, the multi-bandwidth
Gaussian-kernel MMD with median-heuristic bandwidths. Not implemented: class-matched MMD for
conditional students (the loss compares the batch's marginals, which match when the
generator's labels are the batch's own or uniform), and the paper's particular embedding
architectures (its ImageNet-scale networks do not fit this machine; any random set is the
paper's premise).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from distill.data.base import ArrayData
from distill.errors import ConfigError

BANDWIDTH_MULTIPLES = (0.1, 0.2, 0.5, 1.0, 2.0)  # of the median pairwise distance


class EmbeddingLossConfig(BaseModel):
    """The `embedding_loss` section of a method that takes it (weight 0: off)."""

    model_config = ConfigDict(extra="forbid")
    weight: float = Field(0.0, ge=0, description="weight of the embedding loss (0: off)")
    networks: int = Field(8, ge=1, le=64, description="how many random embedding networks")
    width: int = Field(64, ge=4, le=1024, description="hidden width (channels) of each network")
    seed: int = Field(0, ge=0, description="seed of the networks' random initialisation")
    bandwidths: list[float] = Field(default_factory=lambda: list(BANDWIDTH_MULTIPLES), min_length=1,
                                    description="Gaussian kernel bandwidths, as multiples of the median feature distance")

    @field_validator("bandwidths")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(b <= 0 for b in value):
            raise ValueError(f"every bandwidth multiple must be > 0, got {value}")
        return value


def random_embedder(shape: Sequence[int], width: int, depth: int) -> nn.Module:
    """A randomly initialised feature network for samples of `shape`: (D,) -> an MLP with
    `depth` hidden layers (B, D) -> (B, width); (C, H, W) -> `depth` 3x3 convolutions, the
    first of stride 1 and the rest of stride 2, pooled to 4x4 maps -> (B, 16 width)."""
    act = nn.LeakyReLU(0.2)
    if len(shape) == 1:
        layers: list[nn.Module] = [nn.Linear(shape[0], width), act]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), act]
        return nn.Sequential(*layers)
    if len(shape) == 3:
        layers = [nn.Conv2d(shape[0], width, 3, padding=1), act]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), act]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
    raise ConfigError(f"method.embedding_loss embeds points (D,) or images (C, H, W); the data's "
                      f"samples have shape {tuple(shape)}: set embedding_loss.weight: 0")


def mmd_median_rbf(a: Tensor, b: Tensor, multiples: Sequence[float] = BANDWIDTH_MULTIPLES) -> Tensor:
    """Differentiable unbiased MMD² (Gretton et al. 2012, Eq. 3) of a (N, F) and b (M, F), with
    the kernel sum_m exp(-|x - y|² / (2 (m h)²)) and h² the median squared distance of the
    pooled set (held constant in the gradient)."""
    pooled = torch.cat([a, b])
    sq = torch.cdist(pooled, pooled).pow(2)
    n = len(a)
    with torch.no_grad():
        off_diagonal = sq[~torch.eye(len(pooled), dtype=torch.bool, device=sq.device)]
        h2 = off_diagonal.median().clamp_min(1e-8)
    kernel = sum(torch.exp(-sq / (2 * m * m * h2)) for m in multiples)
    k_aa, k_bb, k_ab = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]

    def off_diagonal_mean(k: Tensor) -> Tensor:
        return (k.sum() - k.diagonal().sum()) / (len(k) * (len(k) - 1))

    return off_diagonal_mean(k_aa) + off_diagonal_mean(k_bb) - 2 * k_ab.mean()


class EmbeddingLoss(nn.Module):
    """`networks` frozen random embedders (depths 1, 2, 3 in turn, each from its own seed) and
    the weighted mean of their MMD² between generated samples and real ones: the batch's data
    rows `x`, or, for methods whose batches are teacher pairs, as many rows drawn at random
    from the training split."""

    def __init__(self, cfg: EmbeddingLossConfig, data: ArrayData) -> None:
        super().__init__()
        shape = data.shape
        self.weight, self.shape, self.train_rows = cfg.weight, tuple(shape), data.train
        self.bandwidths = tuple(cfg.bandwidths)
        nets = []
        for k in range(cfg.networks):
            with torch.random.fork_rng(devices=[]):  # the trainer's RNG stream is untouched
                torch.manual_seed(cfg.seed * 1_000 + k)
                nets.append(random_embedder(shape, cfg.width, depth=1 + k % 3))
        self.nets = nn.ModuleList(nets).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> EmbeddingLoss:
        return super().train(False)  # never trained, never in train mode

    def real_rows(self, batch: dict[str, Tensor], n: int, device: torch.device) -> Tensor:
        """The data to compare with: batch["x"] (M, *shape), else n random training rows."""
        if "x" in batch:
            return batch["x"]
        index = torch.randint(0, len(self.train_rows), (n,))
        return self.train_rows[index].to(device)

    def forward(self, generated: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """weight * mean over networks of MMD²(phi(generated), phi(real)); generated (N, *shape)
        carries the generator's gradient, real (`real_rows`) is data."""
        real = self.real_rows(batch, len(generated), generated.device)
        if generated.shape[1:] != self.shape or real.shape[1:] != self.shape:
            raise ValueError(f"embedding loss built for samples {self.shape}, got generated "
                             f"{tuple(generated.shape)} and real {tuple(real.shape)}")
        if len(generated) < 2 or len(real) < 2:
            raise ValueError("the embedding loss needs at least 2 generated and 2 real samples")
        real = real.detach()
        total = sum(mmd_median_rbf(net(generated).flatten(1), net(real).flatten(1), self.bandwidths)
                    for net in self.nets)
        return self.weight * total / len(self.nets)


def build_embedding_loss(cfg: EmbeddingLossConfig, data: ArrayData) -> EmbeddingLoss | None:
    """The method's embedding loss, or None when its weight is 0."""
    return EmbeddingLoss(cfg, data) if cfg.weight > 0 else None
