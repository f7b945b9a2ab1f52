"""Side-by-side evaluation of generators on the same noise: one row per (model, steps).

Points are scored with sample distances (SWD, MMD, energy); images with KID, FID, precision
and recall against held-out images in the feature space of a small classifier the library
trains once per dataset, and with class accuracy of conditional samples. Every model starts
from the same noise (and the same class labels) and is compared with the same reference data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from distill.config import EvalConfig
from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.eval_cache import load_row, row_key, store_row
from distill.diffusion.samplers import fixed_noise, nfe_of, sample
from distill.diffusion.straightness import path_straightness
from distill.metrics.samples import (
    energy_blocks,
    mmd_blocks,
    mode_accuracy,
    mode_coverage,
    sliced_wasserstein,
)
from distill.timing import best_seconds

POINT_METRICS = ("mmd", "energy", "swd")
IMAGE_METRICS = ("kid", "fid", "fid_train", "precision", "recall")


@dataclass
class Generator:
    """A model to evaluate: the denoiser, its step counts, sampler and CFG scale."""

    denoiser: Denoiser
    steps: list[int]
    sampler: str = "euler"
    guidance: float = 1.0
    eta: float = 0.0


class PointScorer:
    """Sample distances to the held-out reference (the first eval.n_samples test points).

    Primary: MMD² with an RBF kernel summed over `eval.mmd_bandwidths` (a fine and a coarse
    scale: few-step samples blur the data's fine structure and misplace its mass), a block
    estimate over every sample with a 95% interval (`mmd_ci`, `metrics.samples.blockwise`);
    energy distance likewise (`energy_ci`); SWD as a point value. The choice and the sample
    size are measured in BENCHMARKS.md (bench/metric_resolution.py): at the default 40,000
    samples the primary metric orders the teacher's 4 < 8 < 16 < 64 Euler steps with
    non-overlapping intervals on every toy dataset, which SWD does not on 8gaussians. Images
    without labels (no feature classifier can be trained) are scored as flattened vectors."""

    primary = "mmd"
    intervals = ("mmd", "energy")
    z = 1.96  # the intervals are mean ± z · standard error (95%)

    def __init__(self, data: ArrayData, cfg: EvalConfig) -> None:
        self.data, self.cfg = data, cfg
        self.reference = data.test[: cfg.n_samples]
        self.metrics = list(POINT_METRICS) + (["mode_coverage"] if data.modes is not None else []) \
            + (["class_accuracy"] if data.modes is not None and data.num_classes else [])
        self._self_terms: dict = {}  # the reference's within-set terms and sorted projections, the same for every row

    def score(self, x: Tensor, reference: Tensor | None = None, labels: Tensor | None = None) -> dict[str, float]:
        ref = (self.reference if reference is None else reference).flatten(1)
        x = x.flatten(1)
        cache = self._self_terms if reference is None else None
        values: dict[str, Any] = {"swd": sliced_wasserstein(x, ref, b_cache=cache)}
        estimates = {"mmd": mmd_blocks(x, ref, self.cfg.mmd_bandwidths, b_self=cache),
                     "energy": energy_blocks(x, ref, b_self=cache)}
        for name, (mean, se) in estimates.items():
            values[name] = mean
            values[f"{name}_ci"] = [mean - self.z * se, mean + self.z * se]
        if self.data.modes is not None and self.data.mode_std is not None:
            values.update(mode_coverage(x, self.data.modes, self.data.mode_std))
            if labels is not None:
                values["class_accuracy"] = mode_accuracy(x, labels, self.data.modes, self.data.mode_classes)
        return values

    def floor(self) -> dict[str, float]:
        """Training points (an independent draw) vs the held-out reference, at the evaluation's
        own sample size: no generator can be told apart from the data below this."""
        labels = None if self.data.train_labels is None else self.data.train_labels[: self.cfg.n_samples]
        return self.score(self.data.train[: self.cfg.n_samples], labels=labels)

    def info(self) -> dict[str, Any]:
        return {"mmd_bandwidths": list(self.cfg.mmd_bandwidths), "interval": "95%, block estimate"}


class ImageScorer:
    """Image metrics in the features of a digits-style classifier trained once on this dataset
    and cached, against the held-out test images (a generator that copies its training images
    gains nothing there): KID with a 95% interval (the primary metric: unbiased, so rows of
    different sizes compare), FID, precision and recall; `fid_train`, FID against the training
    images, is kept as its own column; class accuracy for labelled samples."""

    primary = "kid"
    z = 1.96  # the intervals are mean ± z · standard error (95%)

    def __init__(self, data: ArrayData, cfg: EvalConfig) -> None:
        from distill.metrics.feature_net import load_or_train_feature_net

        if data.train_labels is None:
            raise ValueError(f"image metrics need a labelled dataset to train their feature network; "
                             f"{data.name!r} has no labels")
        if len(data.test) < 2:
            raise ValueError(f"image metrics need held-out images to compare with; {data.name!r} has "
                             f"{len(data.test)} (raise data.test_fraction)")
        self.data, self.cfg = data, cfg
        self.net, self._info = load_or_train_feature_net(
            data.train, data.train_labels, data.test, data.test_labels)
        self.reference = data.test
        self.metrics = list(IMAGE_METRICS) + (["class_accuracy"] if data.num_classes else [])

    def score(self, x: Tensor, reference: Tensor | None = None, labels: Tensor | None = None) -> dict[str, float]:
        from distill.metrics.fid import image_metrics

        x = x.clamp(-1, 1)
        ref = self.reference if reference is None else reference
        values: dict[str, Any] = image_metrics(x, ref, self.net, fake_labels=labels)
        se = values.pop("kid_se")
        values["kid_ci"] = [values["kid"] - self.z * se, values["kid"] + self.z * se]
        if reference is None:
            values["fid_train"] = image_metrics(x, self.data.train, self.net)["fid"]
        return values

    def floor(self) -> dict[str, float]:
        """Training images (an independent draw) vs the held-out reference, as many as the rows
        score (FID's bias depends on that number; KID has none)."""
        n = min(self.cfg.n_samples, len(self.data.train))
        labels = None if self.data.train_labels is None else self.data.train_labels[:n]
        return self.score(self.data.train[:n], reference=self.reference, labels=labels)

    def info(self) -> dict[str, Any]:
        return {"feature_net_test_accuracy": self._info.get("test_accuracy"),
                "reference": f"the {len(self.reference)} held-out test images",
                "interval": "95%, jackknife over the samples"}


def make_scorer(data: ArrayData, cfg: EvalConfig) -> PointScorer | ImageScorer:
    """Image metrics for labelled images of at least 8x8 (the feature classifier needs labels
    and that size), else sample distances on the flattened samples."""
    if data.is_image and data.train_labels is not None and min(data.shape[1:]) >= 8:
        return ImageScorer(data, cfg)
    return PointScorer(data, cfg)


def eval_labels(n: int, num_classes: int | None) -> Tensor | None:
    """Class labels for evaluation samples, 0, 1, ..., K-1, 0, 1, ... (so a grid of the first
    rows shows every class), or None for unlabelled data."""
    return None if not num_classes else torch.arange(n) % num_classes


# Stochastic samplers (multistep consistency, DDIM with eta) draw their inner noise from
# seed INNER_NOISE_SEED + chunk start: far from the evaluation's start-noise seeds (small
# integers), so no chunk re-injects its own start noise. (torch's CPU generator keeps a
# seed's low 32 bits: 1 << 32 would be seed 0 again.)
INNER_NOISE_SEED = 1 << 31


@torch.inference_mode()
def generate(gen: Generator, noise: Tensor, labels: Tensor | None, steps: int,
             chunk: int = 2048) -> Tensor:
    """Samples from `noise` (N, *shape), in chunks to bound memory, computed on the
    denoiser's device and returned on the CPU."""
    cond = labels if gen.denoiser.conditional else None
    device = next(gen.denoiser.parameters()).device
    parts = []
    for start in range(0, len(noise), chunk):
        c = None if cond is None else cond[start : start + chunk].to(device)
        parts.append(sample(gen.denoiser, noise[start : start + chunk].to(device), steps,
                            gen.sampler, cond=c, guidance=gen.guidance, eta=gen.eta,
                            seed=INNER_NOISE_SEED + start).cpu())
    return torch.cat(parts)


@torch.inference_mode()
def time_sampler(gen: Generator, noise: Tensor, labels: Tensor | None, steps: int,
                 repeats: int) -> float:
    """Best-of-`repeats` wall time in ms per sample, after one warm-up (on a GPU, the time
    includes copying the samples back, after synchronising)."""
    seconds = best_seconds(lambda: generate(gen, noise, labels, steps), repeats)  # .cpu() synchronises
    return 1000.0 * seconds / len(noise)


def evaluate_generators(models: dict[str, Generator], data: ArrayData, cfg: EvalConfig,
                        scorer: PointScorer | ImageScorer | None = None,
                        cache_context: dict[str, Any] | None = None, cached: tuple[str, ...] = (),
                        extra_metrics: Callable[[Tensor], dict[str, float]] | None = None
                        ) -> tuple[list[dict[str, Any]], dict[str, Tensor]]:
    """Rows {model, sampler, steps, nfe, guidance, eta, <metrics>, ms_per_sample} (guidance
    and eta where not 1 and 0) and samples
    {"data", "<model>/nfe=<nfe>"} (the first cfg.plot_points of each).

    Rows of the models named in `cached` (frozen ones: the teacher) are read from, or written
    to, the evaluation cache (`eval_cache`) under a key made of their weights, sampler, steps
    and `cache_context` (what else decides the row: data and evaluation settings; it must name
    what `extra_metrics`, a further score of each row's samples such as a reward, depends on)."""
    scorer = scorer or make_scorer(data, cfg)
    noise = fixed_noise(cfg.n_samples, data.shape, cfg.seed)
    labels = eval_labels(cfg.n_samples, data.num_classes)
    timing = min(cfg.timing_samples, cfg.n_samples)
    rows: list[dict[str, Any]] = []
    samples = {"data": scorer.reference[: cfg.plot_points]}
    for label, gen in models.items():
        for steps in gen.steps:
            key = None
            if label in cached and cache_context is not None:
                key = row_key(gen.denoiser, {**cache_context, "model": label, "sampler": gen.sampler,
                                             "steps": steps, "guidance": gen.guidance, "eta": gen.eta})
            hit = load_row(key) if key else None
            if hit is not None:
                row, plot = hit
            else:
                x = generate(gen, noise, labels, steps)
                row = {"model": label, "sampler": gen.sampler, "steps": steps, "nfe": nfe_of(gen.sampler, steps)}
                if gen.guidance != 1.0:
                    row["guidance"] = gen.guidance
                if gen.eta:
                    row["eta"] = gen.eta
                row.update(scorer.score(x, labels=labels if gen.denoiser.conditional else None))
                if extra_metrics is not None:
                    row.update(extra_metrics(x))
                plot = x[: cfg.plot_points].clone()
                if key:
                    store_row(key, row, plot)
            if cfg.timing_repeats:  # timings are never cached: measured beside the student
                row["ms_per_sample"] = time_sampler(gen, noise[:timing], None if labels is None
                                                    else labels[:timing], steps, cfg.timing_repeats)
            rows.append(row)
            samples[f"{label}/nfe={row['nfe']}"] = plot
    return rows, samples


def straightness_of(models: dict[str, Generator], data: ArrayData, cfg: EvalConfig,
                    n: int = 2000) -> dict[str, float]:
    """Path straightness (Liu et al. 2023) of each model's velocity field on the first n
    evaluation noises, 64 Euler steps, at the model's CFG scale."""
    noise = fixed_noise(min(n, cfg.n_samples), data.shape, cfg.seed)
    labels = eval_labels(len(noise), data.num_classes)
    values = {}
    for label, gen in models.items():
        device = next(gen.denoiser.parameters()).device
        cond = labels.to(device) if labels is not None and gen.denoiser.conditional else None
        values[label] = path_straightness(gen.denoiser, noise.to(device), 64, cond, gen.guidance)
    return values
