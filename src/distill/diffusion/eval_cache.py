"""Cached evaluation rows of a frozen model (the teacher): every student distilled from one
teacher is compared with the same teacher rows, so they are computed once per (weights,
sampler, steps, evaluation settings, data, device) and kept under $DISTILL_CACHE/eval. The
data floor (held-out vs training data), which depends on the data and settings alone, is
kept the same way.

Only quality metrics and plot samples are cached; sampler timings are always measured anew,
side by side with the student, in the run that reports them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from distill.cache import cache_root

# Bump when a metric's definition or the sampling code changes what a row holds.
ROW_FORMAT = 5  # 5: stochastic samplers' inner noise seeded apart from the start noise; 4: images against held-out images, with KID; 3: MMD² and energy as block estimates with intervals; 2: toy class accuracy by nearest mode


def row_key(denoiser: torch.nn.Module, settings: dict[str, Any]) -> str:
    """sha256 of the denoiser's weights and buffers and of `settings` (sampler, steps, guidance,
    evaluation and data settings, device): equal keys give identical rows."""
    digest = hashlib.sha256()
    for name, tensor in sorted(denoiser.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    digest.update(json.dumps({**settings, "format": ROW_FORMAT}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def _path(key: str) -> Path:
    return cache_root() / "eval" / f"{key}.safetensors"


def load_row(key: str) -> tuple[dict[str, Any], Tensor] | None:
    """(row, plot samples) stored under `key`, or None when absent or unreadable."""
    path = _path(key)
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as handle:
            return json.loads(handle.metadata()["row"]), handle.get_tensor("samples")
    except (SafetensorError, OSError, KeyError, TypeError, ValueError):
        return None  # a broken entry is recomputed (and rewritten)


def store_row(key: str, row: dict[str, Any], samples: Tensor) -> None:
    """Write atomically: a concurrent reader sees the old entry, the new one, or none."""
    path = _path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"samples": samples.contiguous()}, tmp, metadata={"row": json.dumps(row)})
    os.replace(tmp, path)


def cached_floor(context: dict[str, Any], compute: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The data floor for the data and evaluation settings in `context`: `compute()` once, then
    read back."""
    key = hashlib.sha256(json.dumps({**context, "kind": "floor", "format": ROW_FORMAT}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:32]
    hit = load_row(key)
    if hit is not None:
        return hit[0]
    floor = compute()
    store_row(key, floor, torch.zeros(0))
    return floor
