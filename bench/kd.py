"""Benchmark: classifier knowledge distillation on MNIST-1D under the shipped recipes.

    .venv/bin/python bench/kd.py [--out runs/bench-kd] [--seeds 0 1 2]

Trains the teacher recipe once, then every student recipe in `configs/mnist1d/` (the
label-only baseline `supervised`, `kd`, `dkd`, ...) once per seed, and writes a table of
mean ± std over seeds into BENCHMARKS.md between the kd markers, with the command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from common import REPO, machine, write_block

from distill.config import load_config
from distill.runner import run

CONFIGS = REPO / "configs" / "mnist1d"
BEGIN, END = "<!-- kd:begin -->", "<!-- kd:end -->"
TWO_CLASSES = "data.class_groups=[[0,1,2,3,4],[5,6,7,8,9]]"
# (row label, recipe, extra overrides, distils the benchmark's teacher run); the two-class
# rows use their recipe's binary teacher (teacher-binary-mnist1d.yaml, trained once, cached)
STUDENTS = (
    ("label-only baseline (`supervised`)", "supervised", [], False),
    ("**kd**", "kd", [], True),
    ("**dkd**", "dkd", [], True),
    ("**features** (hint + RKD distance)", "features", [], True),
    ("**ofa** (branches at blocks 0 and 1)", "ofa", [], True),
    ("**meal** (2 teachers: this one + the recipe at seed 1)", "meal", [], True),
    ("**multi-teacher** (router over 3 teachers)", "multi-teacher", [], True),
    ("**bd-kd** (online, no pretrained teacher)", "bd-kd", [], False),
    ("**self-distill** (generation 1 of the label-only student)", "self-distill", [], False),
    ("label-only, truncated after block 1", "supervised", ["student.exits=[1]", "student.use_exit=1"], False),
    ("**hsd**, exit after block 1", "hsd", [], False),
    ("kd, 10% of the labels", "kd", ["method.label_fraction=0.1"], True),
    ("**dho**, 10% of the labels", "dho", [], True),
    ("label-only, two classes (0-4 / 5-9)", "supervised", [TWO_CLASSES], False),
    ("kd, two classes (binary teacher; α 0.9, T 4)", "kd-binary", [], False),
    ("**lelp**, two classes (binary teacher)", "lelp", [], False),
)


def mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def bench(out: Path, seeds: list[int]) -> tuple[str, float]:
    teacher_cfg = load_config(CONFIGS / "teacher-mnist1d.yaml", ["train.progress=false"])
    start = time.perf_counter()
    teacher_row = run(teacher_cfg, out / "teacher").rows[0]
    teacher_seconds = time.perf_counter() - start
    teacher_override = f"teacher={{name: run, path: {out / 'teacher'}}}"
    lines = ["| model | params | accuracy % (mean ± std) | agreement % | ECE | KL to teacher | train s |",
             "|---|---|---|---|---|---|---|",
             f"| teacher (`teacher-mnist1d`) | {teacher_row['parameters']:,} | "
             f"{100 * teacher_row['accuracy']:.1f} | — | {teacher_row['ece']:.3f} | — | {teacher_seconds:.0f} |"]
    for i, (name, recipe, extra, distils_teacher) in enumerate(STUDENTS):
        rows, seconds = [], []
        for seed in seeds:
            overrides = ["train.progress=false", f"train.seed={seed}", *extra]
            if distils_teacher:
                overrides.append(teacher_override)
            cfg = load_config(CONFIGS / f"{recipe}-mnist1d.yaml", overrides)
            start = time.perf_counter()
            result = run(cfg, out / f"{i}-{recipe}-seed{seed}")
            seconds.append(time.perf_counter() - start)
            rows.append({r["model"]: r for r in result.rows}.get("student") or result.rows[0])
        # agreement and KL only against the benchmark's teacher (self-distill has its own)
        agreement = mean_std([r["agreement"] for r in rows], 100) if distils_teacher else "—"
        kl = mean_std([r["kl_to_teacher"] for r in rows], digits=3) if distils_teacher else "—"
        lines.append(f"| {name} | {rows[0]['parameters']:,} | {mean_std([r['accuracy'] for r in rows], 100)} | "
                     f"{agreement} | {mean_std([r['ece'] for r in rows], digits=3)} | {kl} | "
                     f"{statistics.fmean(seconds):.0f} |")
    return "\n".join(lines), teacher_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-kd")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    table, teacher_seconds = bench(args.out, args.seeds)
    print(table)
    command = "python " + " ".join(["bench/kd.py", *sys.argv[1:]])
    write_block(BEGIN, END, (
        "## Knowledge distillation of classifiers (MNIST-1D)\n\n"
        f"Command: `{command}` ({machine()}). Recipes in `configs/mnist1d/`: the teacher is a 1-D "
        "CNN with 64 channels trained on the 4,000 labelled signals; every student is the same "
        "1-D CNN with 15 channels, 2,000 steps. Distilling students also see a 25,000-signal "
        "unlabelled transfer set (self-distill: scored by the label-only student of seed 0, its "
        "previous generation), except bd-kd (online: its peer trains beside it) and hsd, which "
        "train on the labelled signals only; hsd is scored at its exit after block 1, beside the "
        "same truncated network trained on labels; the last two rows keep 10% of the labels. "
        f"Seeds {', '.join(map(str, args.seeds))}; accuracy, agreement (same argmax as the "
        "teacher), expected calibration error (15 bins) and KL to "
        "the teacher on the 1,000 held-out signals. 'params' counts every parameter of the exported "
        "model, the blocks an early exit skips included (dho: its second head). 'train s' is the "
        "whole run (training, export, evaluation) per seed; the teacher's is trained once.\n\n"
        f"{table}\n"))


if __name__ == "__main__":
    main()
