"""A small CNN classifier whose penultimate layer is the feature space of the image metrics.

The library trains it once per data set and caches it under
`$DISTILL_CACHE/feature-nets/<hash>/` (`model.safetensors` + `info.json`), where the hash
covers the training data and the training hyperparameters. See `distill.metrics.fid` for the
metrics computed in its feature space.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from distill.cache import cache_root

FORMAT = "distill.feature-net/v1"


class FeatureNet(nn.Module):
    """CNN classifier for images (N, C, H, W) in [-1, 1], any H, W >= 8.

    Three 3x3 conv layers (one 2x max-pool), adaptive average pooling to 2x2, then a
    `feature_dim`-wide hidden layer (the features) and a linear classifier.
    `FeatureNet(**net.config)` rebuilds the same architecture.
    """

    def __init__(
        self, channels: int = 1, size: int = 8, num_classes: int = 10, width: int = 32,
        feature_dim: int = 128,
    ) -> None:
        super().__init__()
        if size < 8:
            raise ValueError(f"FeatureNet needs images of at least 8x8, got size {size}")
        self.channels, self.size, self.num_classes = channels, size, num_classes
        self.width, self.feature_dim = width, feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, feature_dim), nn.GELU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    @property
    def config(self) -> dict[str, int]:
        """The constructor arguments (JSON-serialisable)."""
        return {"channels": self.channels, "size": self.size, "num_classes": self.num_classes,
                "width": self.width, "feature_dim": self.feature_dim}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations: x (N, C, H, W) -> (N, feature_dim)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits: x (N, C, H, W) -> (N, num_classes)."""
        return self.head(self.body(x))


def _random_shift(x: torch.Tensor, generator: torch.Generator, background: float = -1.0
                  ) -> torch.Tensor:
    """Shift each image of x (B, C, H, W) by -1, 0 or +1 pixel on each axis (fill: background)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1), value=background)
    dy = torch.randint(0, 3, (b,), generator=generator)
    dx = torch.randint(0, 3, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def _check_data(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name}_x: expected square images (N, C, H, W), got {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name}_y: expected labels ({x.shape[0]},), got {tuple(y.shape)}")


@torch.no_grad()
def _accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of x (N, C, H, W) that net classifies as y (N,)."""
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        logits = net(x[start : start + batch_size].float())
        correct += int((logits.argmax(1) == y[start : start + batch_size]).sum())
    return correct / max(1, x.shape[0])


def train_feature_net(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
    *, steps: int = 600, batch_size: int = 128, lr: float = 3e-3, weight_decay: float = 1e-4,
    seed: int = 0, augment: bool = True,
) -> tuple[FeatureNet, dict[str, Any]]:
    """Train a FeatureNet with AdamW (cosine learning rate) and return it frozen, in eval mode.

    train_x: (N, C, H, W) in [-1, 1], train_y: (N,) integer labels; test_* the same, held out.
    `augment` shifts every training image by up to one pixel on each axis. Deterministic for
    a given seed (the global RNG state is left untouched). Returns (net, info) with info
    {"test_accuracy", "train_accuracy", "train_size", "test_size", "steps", "train_seconds",
    "config", "hyperparameters"}.
    """
    _check_data(train_x, train_y, "train")
    _check_data(test_x, test_y, "test")
    train_x, test_x = train_x.detach().float().cpu(), test_x.detach().float().cpu()
    train_y, test_y = train_y.detach().long().cpu(), test_y.detach().long().cpu()
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    hyperparameters = {"steps": steps, "batch_size": batch_size, "lr": lr,
                       "weight_decay": weight_decay, "seed": seed, "augment": augment}
    start_time = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(train_x.shape[1], train_x.shape[-1], num_classes)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5
        * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
    net.train()
    n = train_x.shape[0]
    order, position = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if position + batch_size > n:
            order, position = torch.randperm(n, generator=generator), 0
        index = order[position : position + batch_size]
        position += batch_size
        x = train_x[index]
        if augment:
            x = _random_shift(x, generator)
        loss = F.cross_entropy(net(x), train_y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    _freeze(net)
    info = {
        "test_accuracy": _accuracy(net, test_x, test_y),
        "train_accuracy": _accuracy(net, train_x, train_y),
        "train_size": int(n), "test_size": int(test_x.shape[0]), "steps": int(steps),
        "train_seconds": time.perf_counter() - start_time,
        "config": net.config, "hyperparameters": hyperparameters,
    }
    return net, info


def _freeze(net: FeatureNet) -> FeatureNet:
    net.eval()
    net.requires_grad_(False)
    return net


def _cache_key(tensors: list[torch.Tensor], hyperparameters: dict[str, Any]) -> str:
    """sha256 (16 hex digits) of the format, the tensors' dtypes, shapes and bytes, and the
    resolved hyperparameters."""
    digest = hashlib.sha256(FORMAT.encode())
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    digest.update(json.dumps(hyperparameters, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _load_entry(directory: Path) -> tuple[FeatureNet, dict[str, Any]]:
    """Read a cache entry; raises on anything missing or inconsistent."""
    info = json.loads((directory / "info.json").read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"format {info.get('format')!r}, expected {FORMAT!r}")
    net = FeatureNet(**info["config"])
    net.load_state_dict(load_file(directory / "model.safetensors"), strict=True)
    return _freeze(net), info


def _save_entry(directory: Path, net: FeatureNet, info: dict[str, Any]) -> None:
    """Write the entry into a temporary sibling directory, then move it into place."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
        save_file(weights, tmp / "model.safetensors")
        (tmp / "info.json").write_text(json.dumps({"format": FORMAT, **info}, indent=2))
        if directory.exists():  # a corrupt entry (we hold the lock): replace it
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_or_train_feature_net(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
    *, cache_dir: Path | None = None, **train_kwargs: Any,
) -> tuple[FeatureNet, dict[str, Any]]:
    """The cached FeatureNet for this data and these hyperparameters, trained on first use.

    Arguments as for `train_feature_net`. Entries live in `cache_dir` (default
    `cache_root() / "feature-nets"`) under the hash of the data and the hyperparameters; a
    file lock keeps two processes from training the same entry twice, and an unreadable entry
    is reported with a warning and retrained. Returns the frozen net (eval mode, no grads)
    and its info with "cached": True when it came from the cache, and "path".
    """
    bound = inspect.signature(train_feature_net).bind(
        train_x, train_y, test_x, test_y, **train_kwargs)
    bound.apply_defaults()
    hyperparameters = {k: v for k, v in bound.arguments.items() if not k.endswith(("_x", "_y"))}
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "feature-nets"
    directory = root / _cache_key([train_x, train_y, test_x, test_y], hyperparameters)

    warned = False

    def cached() -> tuple[FeatureNet, dict[str, Any]] | None:
        nonlocal warned
        if not directory.exists():
            return None
        try:
            net, info = _load_entry(directory)
        except Exception as err:  # any unreadable entry is retrained
            if not warned:
                warnings.warn(f"feature-net cache entry {directory} is unreadable "
                              f"({type(err).__name__}: {err}); retraining it", stacklevel=3)
                warned = True
            return None
        return net, {**info, "cached": True, "path": str(directory)}

    hit = cached()
    if hit is not None:
        return hit
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        hit = cached()  # another process may have trained it while we waited for the lock
        if hit is not None:
            return hit
        net, info = train_feature_net(train_x, train_y, test_x, test_y, **train_kwargs)
        _save_entry(directory, net, info)
    return net, {**info, "format": FORMAT, "cached": False, "path": str(directory)}
