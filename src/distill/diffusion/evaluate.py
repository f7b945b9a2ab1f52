"""Side-by-side evaluation of generators on the same noise: one row per (model, steps)."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from distill.config import EvalConfig
from distill.data.base import PointData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.samplers import fixed_noise, nfe_of, sample
from distill.metrics.samples import energy_distance, mmd_rbf, mode_coverage, sliced_wasserstein

METRICS = ("swd", "mmd", "energy")


def point_metrics(x: Tensor, reference: Tensor, data: PointData, n_pairwise: int) -> dict[str, float]:
    """SWD on all points; MMD and energy (quadratic cost) on the first `n_pairwise`."""
    values = {
        "swd": sliced_wasserstein(x, reference),
        "mmd": mmd_rbf(x[:n_pairwise], reference[:n_pairwise]),
        "energy": energy_distance(x[:n_pairwise], reference[:n_pairwise]),
    }
    if data.modes is not None and data.mode_std is not None:
        values.update(mode_coverage(x, data.modes, data.mode_std))
    return values


@torch.inference_mode()
def timed_sample(denoiser: Denoiser, noise: Tensor, steps: int, sampler: str,
                 repeats: int) -> tuple[Tensor, float]:
    """Samples from `noise`, and the best-of-`repeats` wall time in ms per sample."""
    out = sample(denoiser, noise, steps, sampler)  # also the warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        sample(denoiser, noise, steps, sampler)
        best = min(best, time.perf_counter() - start)
    return out, 1000.0 * best / len(noise)


def data_floor(data: PointData, cfg: EvalConfig, n_pairwise: int = 4000) -> dict[str, float]:
    """The metrics between two independent samples of the data itself (training points vs
    the held-out reference): no generator can be told apart from the data below this."""
    return point_metrics(data.train[: cfg.n_samples], data.test[: cfg.n_samples], data, n_pairwise)


def evaluate_generators(models: dict[str, tuple[Denoiser, list[int], str]], data: PointData,
                        cfg: EvalConfig, n_pairwise: int = 4000
                        ) -> tuple[list[dict[str, Any]], dict[str, Tensor]]:
    """Rows {model, sampler, steps, nfe, swd, mmd, energy, [mode_*], ms_per_sample} and
    samples {"data", "<model>/nfe=<nfe>"} (the first cfg.plot_points of each).

    models: label -> (denoiser, list of step counts, sampler). Every model starts from the
    same noise (cfg.seed) and is compared with the same held-out data.
    """
    reference = data.test[: cfg.n_samples]
    noise = fixed_noise(cfg.n_samples, (data.dim,), cfg.seed)
    rows: list[dict[str, Any]] = []
    samples = {"data": reference[: cfg.plot_points]}
    for label, (denoiser, step_counts, sampler) in models.items():
        for steps in step_counts:
            x, ms = timed_sample(denoiser, noise, steps, sampler, cfg.timing_repeats)
            nfe = nfe_of(sampler, steps)
            row = {"model": label, "sampler": sampler, "steps": steps, "nfe": nfe}
            row.update(point_metrics(x, reference, data, n_pairwise))
            row["ms_per_sample"] = ms
            rows.append(row)
            samples[f"{label}/nfe={nfe}"] = x[: cfg.plot_points].clone()
    return rows, samples
