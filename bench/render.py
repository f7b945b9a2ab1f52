"""Benchmark: score distillation of the digits teacher into a 2-D Gaussian-splat renderer.

    .venv/bin/python bench/render.py [--out runs/bench-render] [--seeds 0 1 2]

Runs the shipped recipes `sds` (DreamFusion), `vsd-render` (ProlificDreamer) and `prd`
(progressive rendering distillation, a generator sampled in 4 passes) at each seed, and `sds`
without guidance (`method.guidance=1`, its ablation) at the first seed, and writes one table
into BENCHMARKS.md between the render markers: per recipe the renders' class accuracy, KID
(the library's, in the feature classifier's features), FID, recall and within-class spread as
mean ± std over seeds, with the
initial splats and the teacher's own 16-step samples (from the first run) as references.
The MLP digits teacher (configs/digits/teacher-digits-mlp.yaml) is trained once and cached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import REPO, bench_run, mean_std, provenance, write_block

from distill.config import load_config

DIGITS = REPO / "configs" / "digits"
BEGIN, END = "<!-- render:begin -->", "<!-- render:end -->"
# (row label, recipe, overrides, every seed or the first only)
RECIPES = (
    ("**sds** (guidance 7.5)", "sds-digits", [], True),
    ("sds without guidance (guidance 1)", "sds-digits", ["method.guidance=1"], False),
    ("**vsd-render** (guidance 7.5, fake score from the teacher)", "vsd-render-digits", [], True),
    ("**prd** (a generator: 4 training parts, 4 sampling passes)", "prd-digits", [], True),
    ("prd, one part and one pass (`method.parts=1`)", "prd-digits", ["method.parts=1", "student.sample_steps=1"], True),
)
METRICS = (("class_accuracy", 100.0, 0, "class accuracy %"), ("kid", 1.0, 1, "KID"),
           ("fid", 1.0, 1, "FID"), ("recall", 1.0, 3, "recall"), ("spread", 1.0, 3, "spread"))


def cells(rows: list[dict]) -> list[str]:
    """mean ± std over `rows` (one per seed) of each of METRICS."""
    return [mean_std([r[key] for r in rows], scale, digits) for key, scale, digits, _ in METRICS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-render")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    header = "| renders | seeds | " + " | ".join(label for *_, label in METRICS) + " | run s |"
    lines = [header, "|" + "---|" * (len(METRICS) + 3)]
    references: dict[str, dict] = {}
    for label, recipe, overrides, every_seed in RECIPES:
        seeds = args.seeds if every_seed else args.seeds[:1]
        rows, seconds = [], []
        for seed in seeds:
            cfg = load_config(DIGITS / f"{recipe}.yaml", ["train.progress=false", f"train.seed={seed}", *overrides])
            tag = "".join("-" + o.replace("=", "").replace(".", "-") for o in overrides)
            result, cell = bench_run(cfg, args.out / f"{recipe}{tag}-seed{seed}")
            by_model = {r["model"]: r for r in result["rows"]}
            rows.append(by_model["renders"])
            seconds.append(cell)
            references.setdefault("initial splats", by_model["initial"])
            references.setdefault("teacher, 16 steps (guidance 7.5)", by_model["teacher"])
        lines.append(f"| {label} | {len(seeds)} | " + " | ".join(cells(rows)) + f" | {' / '.join(seconds)} |")
    for label, row in references.items():
        lines.append(f"| {label} | 1 | " + " | ".join(cells([row])) + " | — |")
    command = "python bench/render.py" + ("" if args.seeds == [0, 1, 2] else " --seeds " + " ".join(map(str, args.seeds)))
    body = "\n".join([
        "## Score distillation into a renderer (digits, 12 splats per image, 40 renders)", "",
        provenance(command), "",
        "Each render's parameters are optimised through the frozen MLP digits teacher for 500 steps "
        "(sds, vsd-render), or a generator trained for 1000 steps renders them from noise (prd); "
        "the renders are scored against held-out digits (KID, FID, recall) and by the feature "
        "classifier (class accuracy of the prompted class); spread is the mean pixel distance "
        "between renders of one class.", "", *lines])
    write_block(BEGIN, END, body, before="<!-- gate-nfe:begin -->")
    print(body)


if __name__ == "__main__":
    sys.exit(main())
