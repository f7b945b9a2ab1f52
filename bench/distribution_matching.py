"""Benchmark: distribution matching distillation (`dmd`, `dmd2`) on the toy suite, with the
ablations issue 5 asks for: dmd vs dmd2, dmd2 with and without its GAN head, and k = 5 vs
k = 1 fake-score updates per generator update at an equal number of generator updates.

    .venv/bin/python bench/distribution_matching.py [--out runs/bench-dmd] [--datasets 8gaussians checkerboard]

Writes its table into BENCHMARKS.md (between the distribution-matching markers) with the
command beside it. Every row is a shipped recipe, changed only by the overrides shown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import REPO, bench_run, provenance, write_block

from distill.config import load_config
from distill.report import comparison_rows
from distill.report.compare import format_estimate, format_metric

BEGIN, END = "<!-- distribution-matching:begin -->", "<!-- distribution-matching:end -->"


def variants(dataset: str) -> list[tuple[str, str, list[str]]]:
    """(label, recipe, overrides) rows for one dataset."""
    dmd2 = load_config(REPO / "configs" / "toy2d" / f"dmd2-{dataset}.yaml")
    gan_on = dmd2.method.gan_weight > 0
    steps = dmd2.train.steps
    toggled = (["method.gan_weight=0"] if gan_on else ["method.gan_weight=0.01", "method.disc_weight=0.1"])
    return [
        ("dmd (regression + DM, k = 1)", "dmd", []),
        (f"dmd2 (k = 5{', GAN' if gan_on else ''})", "dmd2", []),
        (f"dmd2 (k = 5, {'no GAN' if gan_on else 'GAN 0.01 / 0.1'})", "dmd2", toggled),
        (f"dmd2 (k = 1, {'GAN, ' if gan_on else ''}same generator updates)", "dmd2",
         ["method.fake_updates=1", f"train.steps={steps // 5}"]),
    ]


def generator_updates(cfg) -> int:
    k = cfg.method.fake_updates
    return len(range(k - 1, cfg.train.steps, k))


def bench(datasets: list[str], out: Path) -> str:
    lines = ["| dataset | variant | generator updates | 1-step MMD² ± 95% | ≡ teacher NFE | teacher-1 MMD² | "
             "smallest mode | 1-step SWD | train + eval s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for dataset in datasets:
        for i, (label, method, overrides) in enumerate(variants(dataset)):
            cfg = load_config(REPO / "configs" / "toy2d" / f"{method}-{dataset}.yaml",
                              ["train.progress=false", "eval.nfe=[1,2,4,8,16,32,64]", "eval.timing_repeats=0",
                               *overrides])
            eval_data, seconds = bench_run(cfg, out / f"{dataset}-{i}-{method}")
            student = {r["nfe"]: r for r in comparison_rows(eval_data)}[1]
            teacher1 = next(r for r in eval_data["rows"] if r["model"] == "teacher" and r["nfe"] == 1)
            mode = student.get("min_mode_fraction")
            matched = "> 64" if student["speedup_lower_bound"] else str(student["match_nfe"])
            shown = " ".join(f"`{o}`" for o in overrides)
            lines.append(f"| {dataset} | {label} {shown} | {generator_updates(cfg)} | {format_estimate(student, 'mmd')} | "
                         f"{matched} | {format_estimate(teacher1, 'mmd')} | "
                         f"{'—' if mode is None else f'{mode:.3f}'} | {format_metric(student['swd'])} | {seconds} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-dmd")
    parser.add_argument("--datasets", nargs="+", default=["8gaussians", "checkerboard"])
    args = parser.parse_args()
    table = bench(args.datasets, args.out)
    command = "python " + " ".join(["bench/distribution_matching.py", *sys.argv[1:]])
    write_block(BEGIN, END, (
        f"## Distribution matching (toy 2D)\n\n{provenance(command)} Teacher "
        f"training excluded when cached.\n\n{table}\n\nMMD²: the resolved toy metric (RBF kernel at "
        "bandwidths 0.05 and 1, 40,000 samples, 95% interval); ≡ teacher NFE: the cheapest teacher "
        "step count not significantly worse than the 1-step student (Euler); SWD: sliced Wasserstein-2, "
        "for reference; smallest mode: the least-populated of the 8 modes (8gaussians; "
        "1/8 = 0.125 is perfect balance). k: fake-score updates per generator update; the "
        "k = 1 row runs train.steps / 5 trainer steps so it makes as many generator updates. Seconds include the evaluation and are context "
        "only (other runs may share the machine)."))


if __name__ == "__main__":
    main()
