"""A differentiable reward model on the data substrate, trained once, for reward tuning of
few-step students (`dmd-flash`'s joint RL stage).

Text-to-image reward tuning scores samples with a learned preference or aesthetic model
(HPS, PickScore, an aesthetic predictor): a network that tells good images from bad ones and
whose score can be pushed up past what real images get — reward hacking. The analogue here is
a *realism* model: an MLP classifier of the training data (positives) against the same data
corrupted by Gaussian noise of `noise` times the data's standard deviation (negatives). Its
logit is the reward: high on the data manifold, low between modes, and, as a ReLU network,
unbounded along the directions it extrapolates — so a generator that maximises it alone can
leave the data (the failure Flash-DMD's continued distillation guards against).

The model is trained deterministically from `seed` (its own random stream; the caller's is
left where it was), in a few seconds on a CPU, and rebuilt by evaluation from the same config.
"""

from __future__ import annotations

import hashlib
import json

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from distill.data.base import ArrayData

_TRAINED: dict[str, nn.Module] = {}  # (config, data) hash -> trained model, one per process


class RealismRewardConfig(BaseModel):
    """The realism reward model's settings (how it is trained)."""

    model_config = ConfigDict(extra="forbid")
    noise: float = Field(0.5, gt=0, description=(
        "the realism model's negatives are training points plus Gaussian noise of this many data "
        "standard deviations"))
    width: int = Field(128, gt=0, description="hidden width of the realism model's MLP")
    depth: int = Field(3, ge=1, description="hidden layers of the realism model's MLP")
    train_steps: int = Field(1500, gt=0, description="Adam steps training the realism model")
    seed: int = Field(0, description="seed of the realism model's initialisation and batches")


class RewardConfig(RealismRewardConfig):
    """The reward term of a reward-tuned method: weight, when it starts, and its model."""

    weight: float = Field(0.0, ge=0, description="weight of -reward in the generator's loss (0: off)")
    start: int = Field(0, ge=0, description=(
        "trainer step at which the reward term switches on (before it: distillation alone, "
        "Flash-DMD's first stage)"))

    @property
    def enabled(self) -> bool:
        return self.weight > 0


class RealismReward(nn.Module):
    """r(x) = logit of P(x is a data point | x) from an MLP on flattened samples.

    forward: x (B, *shape) -> (B,) rewards (differentiable in x; the weights are frozen)."""

    def __init__(self, dim: int, width: int, depth: int, scale: Tensor) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(dim if i == 0 else width, width), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))
        self.register_buffer("scale", scale)  # the data's std: inputs are standardised

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1) / self.scale).squeeze(1)


def _key(cfg: RealismRewardConfig, data: ArrayData) -> str:
    digest = hashlib.sha256(data.train.contiguous().numpy().tobytes()).hexdigest()
    settings = cfg.model_dump(include=set(RealismRewardConfig.model_fields))
    return hashlib.sha256(json.dumps([settings, digest], sort_keys=True).encode()).hexdigest()


def build_reward_model(cfg: RealismRewardConfig, data: ArrayData) -> RealismReward:
    """The realism reward of `data`'s training split (trained once per process and config),
    frozen, in eval mode, on the CPU."""
    key = _key(cfg, data)
    if key in _TRAINED:
        return _TRAINED[key]
    generator = torch.Generator().manual_seed(cfg.seed)
    real = data.train.flatten(1).float()
    scale = real.std().clamp_min(1e-6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = RealismReward(real.shape[1], cfg.width, cfg.depth, scale)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = min(512, len(real))
    for _ in range(cfg.train_steps):
        rows = real[torch.randint(0, len(real), (batch,), generator=generator)]
        fake = rows + cfg.noise * scale * torch.randn(rows.shape, generator=generator)
        logits = model(torch.cat([rows, fake]))
        target = torch.cat([torch.ones(batch), torch.zeros(batch)])
        loss = F.binary_cross_entropy_with_logits(logits, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    model.requires_grad_(False).eval()
    _TRAINED[key] = model
    return model


@torch.no_grad()
def mean_reward(model: nn.Module, x: Tensor, chunk: int = 4096) -> float:
    """The reward model's mean score of samples x (N, *shape), on the model's device."""
    device = next(model.parameters()).device
    total = sum(model(x[i : i + chunk].to(device)).double().sum().item() for i in range(0, len(x), chunk))
    return total / len(x)
