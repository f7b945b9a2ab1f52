"""Teacher (noise, ODE solution) pairs, made by solving the teacher's ODE from seeded noise,
and kept on disk under $DISTILL_CACHE/pairs.

Solving the teacher's ODE for tens of thousands of noises is often the costliest part of a
short run, and every method that regresses onto the same teacher's pairs (`ode-pairs`,
`dmd`'s regression term, `reflow`, `instaflow`, `slimflow`) asks for the same ones, so they
are made once per (teacher weights, count, shape, classes, seed, steps, sampler, guidance,
device) and read back afterwards. A write is atomic; an unreadable entry is made again.
"""

from __future__ import annotations

import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from distill.cache import cache_root
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.eval_cache import row_key
from distill.diffusion.samplers import fixed_noise, sample


def generation_labels(n: int, num_classes: int | None, seed: int) -> Tensor | None:
    """Class labels to generate with: (n,) cycling 0..K-1 in a seeded order, or None."""
    if not num_classes:
        return None
    generator = torch.Generator().manual_seed(seed)
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]


def prior_noise_rows(n: int, shape: tuple[int, ...], num_classes: int | None, seed: int) -> dict[str, Tensor]:
    """The training rows of a data-free method: {"noise": (n, *shape)[, "y": (n,)]}, prior
    noises and (for a class-conditional teacher) the labels to generate with, both seeded."""
    rows = {"noise": fixed_noise(n, shape, seed=30_011 + seed)}
    labels = generation_labels(n, num_classes, seed=40_009 + seed)
    return rows if labels is None else {**rows, "y": labels}


@torch.no_grad()
def teacher_pairs(teacher: Denoiser, n: int, shape: tuple[int, ...], num_classes: int | None,
                  seed: int, steps: int, sampler: str = "euler", guidance: float = 1.0) -> dict[str, Tensor]:
    """{"noise": (n, *shape), "target": (n, *shape)[, "y": (n,)]}: n teacher ODE solutions
    (`steps` steps of `sampler`, CFG scale `guidance`) from noise seeded by `seed`."""
    noise = fixed_noise(n, shape, seed=10_007 + seed)
    labels = generation_labels(n, num_classes, seed=20_011 + seed)
    chunk = max(1, 2**17 // max(1, noise[0].numel()))
    targets = [sample(teacher, e, steps, sampler, cond=None if labels is None else labels[i : i + chunk],
                      guidance=guidance)
               for e, i in zip(noise.split(chunk), range(0, n, chunk), strict=True)]
    bank = {"noise": noise, "target": torch.cat(targets)}
    if labels is not None:
        bank["y"] = labels
    return bank


def cached_teacher_pairs(teacher: Denoiser, n: int, shape: tuple[int, ...], num_classes: int | None,
                         seed: int, steps: int, sampler: str = "euler", guidance: float = 1.0) -> dict[str, Tensor]:
    """`teacher_pairs(...)`, read from the cache when this teacher made them before."""
    device = next(teacher.parameters()).device
    key = row_key(teacher, {"kind": "teacher-pairs", "n": n, "shape": list(shape), "num_classes": num_classes,
                            "seed": seed, "steps": steps, "sampler": sampler, "guidance": guidance,
                            "device": device.type})
    path = cache_root() / "pairs" / f"{key}.safetensors"
    if path.is_file():
        try:
            return load_file(path, device=str(device))
        except (SafetensorError, OSError):
            pass  # a broken entry is made again (and rewritten)
    bank = teacher_pairs(teacher, n, shape, num_classes, seed, steps, sampler, guidance)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in bank.items()}, tmp)
    os.replace(tmp, path)
    return bank



