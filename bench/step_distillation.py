"""Benchmark: every step-distillation method on the toy suite under its shipped recipe.

    .venv/bin/python bench/step_distillation.py [--out runs/bench] [--datasets 8gaussians checkerboard]

Writes the results table into BENCHMARKS.md (between the step-distillation markers), with
the command that produced it, and a quality-vs-NFE plot per dataset (docs/img/
step-distillation-<dataset>.png: the teacher's SWD curve with every method's student rows).
All numbers of one table come from one invocation: teacher and student rows of a dataset are
measured in the same process on the same noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import REPO, machine, write_block

from distill.config import load_config
from distill.report import comparison_rows
from distill.report.compare import format_metric, format_ms, format_speedup
from distill.report.plots import metric_vs_nfe
from distill.runner import run

METHODS = ("ode-pairs", "progressive", "cd", "mcd", "tscd", "scm", "reflow", "instaflow", "slimflow", "meanflow",
           "flow-map", "boot", "dmd", "dmd2", "sid", "vsd", "f-distill", "dmd-phased", "tdm", "disback",
           "twinflow")
BEGIN, END = "<!-- step-distillation:begin -->", "<!-- step-distillation:end -->"
PLOTS = REPO / "docs" / "img"


def write_plot(dataset: str, teacher_rows: list[dict], students: dict[str, list[dict]]) -> Path:
    """docs/img/step-distillation-<dataset>.png: SWD vs NFE, the teacher's curve and each
    method's student rows as labelled markers."""
    rows = teacher_rows + [{**r, "model": method, "sampler": ""} for method, found in students.items()
                           for r in found]
    path = PLOTS / f"step-distillation-{dataset}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(metric_vs_nfe({"rows": rows}, "swd"))
    return path


HEADER = ["| dataset | model | NFE | SWD | MMD | ms / sample | train s | ≡ teacher NFE | speed-up |",
          "|---|---|---|---|---|---|---|---|---|"]


def bench(datasets: list[str], out: Path) -> str:
    """One table and one SWD-vs-NFE plot per dataset."""
    sections = []
    for dataset in datasets:
        lines, teacher_rows, students = list(HEADER), None, {}
        for method in METHODS:
            recipe = REPO / "configs" / "toy2d" / f"{method}-{dataset}.yaml"
            if not recipe.exists():  # some methods ship an 8gaussians recipe only
                print(f"no {recipe.name}: {method} skipped on {dataset}", file=sys.stderr)
                continue
            cfg = load_config(recipe, ["train.progress=false"])
            start = time.perf_counter()
            result = run(cfg, out / f"{method}-{dataset}")
            seconds = time.perf_counter() - start
            eval_data = json.loads((result.run_dir / "eval.json").read_text())
            if teacher_rows is None:
                floor = eval_data["floor"]
                lines.append(f"| {dataset} | data vs data (floor) | — | {format_metric(floor['swd'])} | "
                             f"{format_metric(floor['mmd'])} | | | | |")
                teacher_rows = [r for r in eval_data["rows"] if r["model"] == "teacher"]
                for r in teacher_rows:
                    lines.append(f"| {dataset} | teacher (Euler) | {r['nfe']} | {format_metric(r['swd'])} | "
                                 f"{format_metric(r['mmd'])} | {format_ms(r['ms_per_sample'])} | | | |")
            students[method] = [r for r in eval_data["rows"] if r["model"] == "student"]
            for r in comparison_rows(eval_data):
                lines.append(
                    f"| {dataset} | **{method}** | {r['nfe']} | {format_metric(r['swd'])} | "
                    f"{format_metric(r['mmd'])} | {format_ms(r['ms_per_sample'])} | {seconds:.0f} | "
                    f"{r['match_nfe'] or '—'} | {format_speedup(r['speedup'], r['speedup_lower_bound'])} |")
        plot = write_plot(dataset, teacher_rows, students)
        lines.append(f"\n![SWD vs NFE on {dataset}]({plot.relative_to(REPO)})")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def write_benchmarks(table: str, command: str) -> None:
    write_block(BEGIN, END, (
        f"## Step distillation (toy 2D)\n\nCommand: `{command}` "
        f"(teacher training excluded when cached; {machine()}).\n\n{table}\n\n"
        "SWD: sliced Wasserstein-2 to 10,000 held-out points (256 fixed projections); "
        "MMD: multi-bandwidth RBF MMD² on 4,000 points. Speed-up: teacher time at the "
        "cheapest NFE with SWD at least as good, divided by the student's time "
        "(≥ when no teacher NFE is as good); on 8gaussians the teacher reaches the data floor "
        "by NFE 8, so SWD ties there and MMD separates the rows better. 'train s' "
        "includes making teacher pairs and the evaluation."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench")
    parser.add_argument("--datasets", nargs="+", default=["8gaussians", "checkerboard"])
    args = parser.parse_args()
    table = bench(args.datasets, args.out)
    print(table)
    write_benchmarks(table, "python " + " ".join(["bench/step_distillation.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
