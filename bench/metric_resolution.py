"""Benchmark: can the toy metrics tell the teacher's step counts apart?

    .venv/bin/python bench/metric_resolution.py [--sizes 40000 10000]

For every toy dataset, the standard teacher recipe (configs/toy2d/teacher-8gaussians.yaml on
that dataset) samples at 4, 8, 16, 32 and 64 Euler steps; each candidate metric scores those
samples and an independent data draw (the floor) against the held-out reference, at each
sample size, with 95% intervals (block estimates; SWD has none). A metric resolves a dataset
when teacher-4 > 8 > 16 > 64 with non-overlapping intervals. Writes BENCHMARKS.md's
metric-resolution section.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
from common import REPO, provenance, write_block

from distill.diffusion.samplers import fixed_noise, sample
from distill.metrics.samples import BANDWIDTHS, energy_blocks, mmd_blocks, sliced_wasserstein
from distill.registry import DATASETS
from distill.teachers import RecipeTeacher

DATASETS_ = ("8gaussians", "checkerboard", "moons", "swissroll", "spirals", "rings")
NFES = (4, 8, 16, 32, 64)
ORDER = (4, 8, 16, 64)  # what must be resolved: each worse than the next
Z = 1.96
BEGIN, END = "<!-- metric-resolution:begin -->", "<!-- metric-resolution:end -->"


def candidates() -> dict[str, Callable[[torch.Tensor, torch.Tensor], tuple[float, float | None]]]:
    """Metric name -> (samples, reference) -> (value, standard error or None)."""
    return {
        "MMD² (0.05, 1) [primary]": lambda x, r: mmd_blocks(x, r, (0.05, 1.0)),
        "MMD² (6 bandwidths)": lambda x, r: mmd_blocks(x, r, BANDWIDTHS),
        "energy": lambda x, r: energy_blocks(x, r),
        "SWD": lambda x, r: (sliced_wasserstein(x, r), None),
    }


def resolves(scores: dict[int, tuple[float, float | None]]) -> bool:
    """teacher-4 > 8 > 16 > 64, each pair with non-overlapping 95% intervals (point values
    when the metric has no interval)."""
    for a, b in zip(ORDER, ORDER[1:], strict=False):
        (va, sa), (vb, sb) = scores[a], scores[b]
        if va - Z * (sa or 0.0) <= vb + Z * (sb or 0.0):
            return False
    return True


def cell(value: float, se: float | None) -> str:
    return f"{value:.3g}" if se is None else f"{value:.3g} ± {Z * se:.1g}"


def dataset_rows(name: str, sizes: list[int]) -> list[str]:
    teacher, _ = RecipeTeacher(config=REPO / "configs" / "toy2d" / "teacher-8gaussians.yaml",
                               overrides=[f"data.name={name}", f"name=teacher-{name}"]).load()
    size = max(sizes)
    config = DATASETS.get(name)
    reference = config(name=name, n=10, n_test=size).build().test
    floor = config(name=name, n=10, n_test=size, seed=101).build().test  # an independent draw
    noise = fixed_noise(size, (2,), 1234)
    with torch.no_grad():
        samples = {nfe: torch.cat([sample(teacher, c, nfe) for c in noise.split(10000)]) for nfe in NFES}
    rows = []
    for n in sizes:
        for metric, score in candidates().items():
            scores = {nfe: score(x[:n], reference[:n]) for nfe, x in samples.items()}
            floor_score = score(floor[:n], reference[:n])
            rows.append(f"| {name} | {n:,} | {metric} | {cell(*floor_score)} | "
                        + " | ".join(cell(*scores[nfe]) for nfe in NFES)
                        + f" | {'yes' if resolves(scores) else '**no**'} |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[40000, 10000])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS_))
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["| dataset | n | metric | floor | teacher-4 | teacher-8 | teacher-16 | teacher-32 | "
             "teacher-64 | resolves 4 > 8 > 16 > 64 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.datasets:
        lines += dataset_rows(name, args.sizes)
    command = "python " + " ".join(["bench/metric_resolution.py", *sys.argv[1:]])
    write_block(BEGIN, END, (
        "## Toy metric resolution\n\n"
        f"{provenance(command)} The standard teacher recipe "
        "(`configs/toy2d/teacher-8gaussians.yaml` on each dataset) at 4–64 Euler steps and an "
        "independent data draw (floor), each against the same held-out reference of n points; "
        "± is the half-width of a 95% interval (block estimates, `metrics.samples.blockwise`; SWD "
        "has none). 'resolves' asks for teacher-4 > 8 > 16 > 64 with non-overlapping intervals. "
        "The primary toy metric is the first row of each group, at the evaluation's default "
        "n = 40,000 (`eval.n_samples`, `eval.mmd_bandwidths`).\n\n" + "\n".join(lines)))


if __name__ == "__main__":
    main()
