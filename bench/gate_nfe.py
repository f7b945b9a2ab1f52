"""Benchmark: each toy student's ≡ teacher NFE at the CI gates' settings, over seeds.

    .venv/bin/python bench/gate_nfe.py [--out runs/bench-gate-nfe] [--seeds 0 1 2] [--methods ...]

Every step-distillation recipe on 8gaussians, shortened as its CI gate runs it
(tests/test_gates_toy2d.SHORT), evaluated with the resolved toy metric (MMD² with 95%
intervals at 40,000 samples) against the teacher at 1-64 steps: per seed, the student's MMD²
and its ≡ teacher NFE (the cheapest teacher NFE not significantly worse than it). This is the
measured K that a gate "the student matches the teacher at ≥ K NFE" can be set from. Writes
BENCHMARKS.md's gate-nfe section.
"""

from __future__ import annotations

import argparse
import sys

from common import REPO, bench_run, provenance, write_block

sys.path.insert(0, str(REPO / "tests"))
from step_distillation import METHODS  # noqa: E402

from distill.config import load_config  # noqa: E402
from distill.report import comparison_rows  # noqa: E402
from test_gates_toy2d import SHORT  # noqa: E402  (the gates' own settings)

BEGIN, END = "<!-- gate-nfe:begin -->", "<!-- gate-nfe:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=lambda p: REPO / p, default=REPO / "runs" / "bench-gate-nfe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m not in ("multi-student", "dmd-decoupled")])
    args = parser.parse_args()
    lines = ["| method | student steps | gate settings | MMD² per seed | ≡ teacher NFE per seed |", "|---|---|---|---|---|"]
    for method in args.methods:
        found: dict[int, list[tuple[float, str]]] = {}
        for seed in args.seeds:
            cfg = load_config(REPO / "configs" / "toy2d" / f"{method}-8gaussians.yaml",
                              ["train.progress=false", "eval.nfe=[1,2,4,8,16,32,64]", "eval.timing_repeats=0",
                               f"train.seed={seed}", *SHORT.get(method, [])])
            eval_data, _ = bench_run(cfg, args.out / f"{method}-s{seed}")
            for row in comparison_rows(eval_data):
                match = f"≥ {row['match_nfe'] or 64}" if row["speedup_lower_bound"] else str(row["match_nfe"])
                found.setdefault(row["nfe"], []).append((row["mmd"], match))
        for nfe, values in sorted(found.items()):
            lines.append(f"| {method} | {nfe} | {' '.join(SHORT.get(method, [])) or 'the recipe'} | "
                         f"{' / '.join(f'{v:.4f}' for v, _ in values)} | {' / '.join(m for _, m in values)} |")
            print(lines[-1], flush=True)
    command = "python " + " ".join(["bench/gate_nfe.py", *sys.argv[1:]])
    write_block(BEGIN, END, (
        "## ≡ teacher NFE at the CI gates' settings (8gaussians)\n\n"
        f"{provenance(command)} Seeds {', '.join(map(str, args.seeds))}; each recipe shortened as "
        "its gate runs it (`tests/test_gates_toy2d.SHORT`); MMD² (RBF at 0.05 and 1) over 40,000 "
        "samples; ≡ teacher NFE: the cheapest teacher NFE (1–64 Euler steps) whose 95% interval "
        "is not worse than the student's.\n\n" + "\n".join(lines)))


if __name__ == "__main__":
    main()
