"""Benchmark: every step-distillation method on the toy suite under its shipped recipe.

    .venv/bin/python bench/step_distillation.py [--out runs/bench] [--datasets 8gaussians ...]

Writes one results table per dataset into BENCHMARKS.md (each between its own markers, with
the command that produced it, so a dataset can be rerun alone) and a quality-vs-NFE plot per
dataset (docs/img/step-distillation-<dataset>.png: the teachers' MMD² curves with every
method's student rows). The primary metric is MMD² with its 95% interval (the resolved toy
metric, bench/metric_resolution.py); SWD is printed for reference. All numbers of one table
come from one invocation: teacher and student rows of a dataset are measured in the same
process on the same noise; stopped and rerun with the same --out, it reads back the runs it
finished (bench_run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common import REPO, bench_run, provenance, write_block

from distill.config import load_config
from distill.report import comparison_rows
from distill.report.compare import format_estimate, format_ms, format_speedup
from distill.report.plots import metric_vs_nfe

METHODS = ("ode-pairs", "progressive", "arcflow", "cd", "mcd", "tscd", "slam", "scm", "reflow", "instaflow", "slimflow", "meanflow",
           "flow-map", "mdt", "boot", "dmd", "dmd2", "sid", "vsd", "f-distill", "dmd-phased", "tdm", "tmd", "disback",
           "twinflow", "multi-student", "dmd-decoupled", "dmd-flash")
# further recipes of a method, run after its own: configs/toy2d/<variant>-<dataset>.yaml (the
# small multi-students and their one-student baseline of the same size; SiD from random weights
# and disback on SiD from random weights, its key effect; dmd2 with the embedding loss at batch 32)
VARIANTS = {"multi-student": ("multi-student-small", "multi-student-small-k1"), "sid": ("sid-random",),
            "disback": ("disback-sid",), "dmd2": ("dmd2-el",)}
# configs/toy2d/<method>-<dataset>.yaml; 8gaussians-2classes is the class-conditional teacher whose
# classes are arcs of 4 modes (multi-student, dmd-decoupled and their dmd2 baseline)
DATASETS = ("8gaussians", "checkerboard", "8gaussians-2classes")
SECTION_END = "<!-- step-distillation:tables-end -->"  # new dataset blocks go above it
PLOTS = REPO / "docs" / "img"
METRICS = (("MMD² ± 95%", "mmd"), ("in mode", "in_mode_fraction"), ("class acc.", "class_accuracy"), ("SWD", "swd"))


def markers(dataset: str) -> tuple[str, str]:
    return f"<!-- step-distillation:{dataset}:begin -->", f"<!-- step-distillation:{dataset}:end -->"


def write_plot(dataset: str, teacher_rows: list[dict], students: dict[str, list[dict]]) -> Path:
    """docs/img/step-distillation-<dataset>.png: MMD² vs NFE, each teacher's curve and each
    method's student rows as labelled markers."""
    rows = teacher_rows + [{**r, "model": method, "sampler": ""} for method, found in students.items()
                           for r in found]
    path = PLOTS / f"step-distillation-{dataset}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(metric_vs_nfe({"rows": rows}, "mmd"))
    return path


def teacher_label(cfg: Any) -> str:
    """How a run's teacher is named in the table: its recipe or run (with the recipe's overrides)
    and its CFG scale."""
    source = getattr(cfg.teacher, "config", None) or getattr(cfg.teacher, "path", None) or cfg.teacher.name
    overrides = "".join(f" `{o}`" for o in getattr(cfg.teacher, "overrides", []))
    guidance = getattr(cfg.method, "guidance", 1.0)
    return f"`{Path(str(source)).stem}`{overrides}, Euler" + (f", CFG {guidance:g}" if guidance != 1.0 else "")


def dataset_table(dataset: str, out: Path) -> str:
    """The table of one dataset and its MMD²-vs-NFE plot. Teacher rows are printed once per
    distinct teacher (recipe, CFG scale), above the first student compared with it; every
    speed-up is against the run's own teacher."""
    rows: list[tuple[str, str, dict, list[str]]] = []  # (model, NFE, metrics row, last 4 cells)
    teachers: dict[str, list[dict]] = {}
    students: dict[str, list[dict]] = {}
    for method in [name for m in METHODS for name in (m, *VARIANTS.get(m, ()))]:
        recipe = REPO / "configs" / "toy2d" / f"{method}-{dataset}.yaml"
        if not recipe.exists():  # not every method ships a recipe for every dataset
            print(f"no {recipe.name}: {method} skipped on {dataset}", file=sys.stderr)
            continue
        cfg = load_config(recipe, ["train.progress=false"])
        eval_data, seconds = bench_run(cfg, out / f"{method}-{dataset}")
        if not rows:
            rows.append(("data vs data (floor)", "—", eval_data["floor"], [""] * 4))
        label = teacher_label(cfg)
        if label not in teachers:
            teachers[label] = [{**r, "sampler": label.replace("`", "")} for r in eval_data["rows"] if r["model"] == "teacher"]
            rows += [(f"teacher ({label})", str(r["nfe"]), r, [format_ms(r["ms_per_sample"]), "", "", ""])
                     for r in teachers[label]]
        students[method] = [r for r in eval_data["rows"] if r["model"] == "student"]
        rows += [(f"**{method}**", str(r["nfe"]), r,
                  [format_ms(r["ms_per_sample"]), seconds, str(r["match_nfe"] or "—"),
                   format_speedup(r["speedup"], r["speedup_lower_bound"])])
                 for r in comparison_rows(eval_data)]
    metrics = [(name, key) for name, key in METRICS if any(r.get(key) is not None for *_, r, _ in rows)]
    lines = ["| model | NFE | " + " | ".join(name for name, _ in metrics) +
             " | ms / sample | train s | ≡ teacher NFE | speed-up |",
             "|---" * (len(metrics) + 6) + "|"]
    for model, nfe, r, last in rows:
        cells = [model, nfe, *(format_estimate(r, key) for _, key in metrics), *last]
        lines.append("| " + " | ".join(cells) + " |")
    plot = write_plot(dataset, [r for found in teachers.values() for r in found], students)
    lines.append(f"\n![MMD² vs NFE on {dataset}]({plot.relative_to(REPO)})")
    return "\n".join(lines)


def write_table(dataset: str, table: str, command: str) -> None:
    """The dataset's block of BENCHMARKS.md (a new dataset's block goes at the end of the
    step-distillation section)."""
    write_block(*markers(dataset), f"### {dataset}\n\n{provenance(command)} Teacher training excluded "
                f"when cached.\n\n{table}", before=SECTION_END)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    args = parser.parse_args()
    command = "python " + " ".join(["bench/step_distillation.py", *sys.argv[1:]])
    for dataset in args.datasets:
        table = dataset_table(dataset, args.out)
        print(table)
        write_table(dataset, table, command)


if __name__ == "__main__":
    main()
