"""What CFG augmentation puts into a one-step `dmd-decoupled` student, on the 2-class 8gaussians
teacher (each class an arc of 4 modes).

    .venv/bin/python bench/decoupled_dmd.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a finished `distill run configs/toy2d/dmd-decoupled-8gaussians-2classes.yaml`
(any overrides: `method.ca_weight=0` for distribution matching alone, `method.dm_weight=0` for CA
alone, `method.ca_t_max=...`). Prints one markdown table: the teacher guided at the runs' CFG
scale and unguided at 64 steps, then each run's one-step student, all on the same noise and
labels. Columns: SWD to the data and to the guided teacher's 64-step samples; the share of
samples within 3 std of a mode ('in mode'); nearest-mode class accuracy; the share of in-mode
samples on their arc's two interior modes, where classifier-free guidance concentrates a class
(`interior_modes`: the guided teacher's signature, against about half unguided); the mean
distance from the origin (the modes sit at 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from distill.config import load_config
from distill.data.toy2d import interior_modes
from distill.diffusion.export import load_denoiser
from distill.diffusion.samplers import fixed_noise, sample
from distill.metrics.samples import mode_accuracy, mode_shares, sliced_wasserstein, subset_share

N_SAMPLES = 10_000


def describe(name: str, x: torch.Tensor, labels: torch.Tensor, data, guided: torch.Tensor) -> str:
    """One markdown row for samples x: (N, 2) drawn for `labels` (N,)."""
    cells = [sliced_wasserstein(x, data.test), sliced_wasserstein(x, guided),
             mode_shares(x, data.modes, data.mode_std).sum().item(),
             mode_accuracy(x, labels, data.modes, data.mode_classes),
             subset_share(x, data.modes, data.mode_std, interior_modes(data.mode_classes)), x.norm(dim=1).mean().item()]
    return f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    cfg = load_config(args.runs[0] / "config.yaml")
    data = cfg.data.build()
    if data.mode_classes is None or not interior_modes(data.mode_classes).any():
        raise SystemExit(f"{args.runs[0]}: needs the 2-class 8gaussians data "
                         "(configs/toy2d/dmd-decoupled-8gaussians-2classes.yaml)")
    teacher, _ = cfg.teacher.load()
    w = cfg.method.guidance
    noise, labels = fixed_noise(N_SAMPLES, (2,), seed=123), torch.arange(N_SAMPLES) % data.num_classes
    print("| model | SWD (data) | SWD (guided teacher-64) | in mode | class acc. | interior share | mean radius |")
    print("|---|---|---|---|---|---|---|")
    with torch.inference_mode():
        guided = sample(teacher, noise, 64, "euler", cond=labels, guidance=w)
        print(describe(f"teacher, 64 steps, CFG {w:g}", guided, labels, data, guided))
        print(describe("teacher, 64 steps, no CFG", sample(teacher, noise, 64, "euler", cond=labels), labels, data, guided))
        for run in args.runs:
            student, _ = load_denoiser(run / "student")
            print(describe(f"`{run.name}`, 1 step", sample(student, noise, 1, "euler", cond=labels), labels, data, guided))


if __name__ == "__main__":
    main()
