"""Benchmark: classifier knowledge distillation on MNIST-1D and digits under the shipped recipes.

    .venv/bin/python bench/kd.py [--out runs/bench-kd] [--seeds 0 1 2]

For each dataset, trains the teacher recipe once, then every student recipe (the label-only
baseline `supervised`, `kd`, `dkd`, ... in `configs/mnist1d/`; `supervised` and `kd` in
`configs/digits/`) once per seed, and writes a table of mean ± std over seeds per dataset into
BENCHMARKS.md between the kd markers, with the command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from common import REPO, bench_run, mean_std, provenance, write_block

from distill.config import load_config

MNIST1D, DIGITS = REPO / "configs" / "mnist1d", REPO / "configs" / "digits"
BEGIN, END = "<!-- kd:begin -->", "<!-- kd:end -->"
TWO_CLASSES = "data.class_groups=[[0,1,2,3,4],[5,6,7,8,9]]"
# (row label, recipe, extra overrides, distils the benchmark's teacher run); the two-class
# rows use their recipe's binary teacher (teacher-binary-mnist1d.yaml, trained once, cached)
MNIST1D_STUDENTS = (
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
DIGITS_STUDENTS = (
    ("label-only baseline (`supervised`)", "supervised", [], False),
    ("kd without mixup", "kd", ["method.mixup=0"], True),
    ("**kd** (mixup 1.0)", "kd", [], True),
)


def bench(out: Path, seeds: list[int], configs: Path, teacher_recipe: str,
          students: tuple[tuple[str, str, list[str], bool], ...]) -> str:
    """The table of one dataset: its teacher recipe trained once into `out`, then each of
    `students` (row label, recipe, overrides, distils that teacher) once per seed."""
    teacher_cfg = load_config(configs / f"{teacher_recipe}.yaml", ["train.progress=false"])
    teacher_eval, teacher_cell = bench_run(teacher_cfg, out / "teacher")
    teacher_row = teacher_eval["rows"][0]
    teacher_override = f"teacher={{name: run, path: {out / 'teacher'}}}"
    lines = ["| model | params | accuracy % (mean ± std) | agreement % | ECE | KL to teacher | train s |",
             "|---|---|---|---|---|---|---|",
             f"| teacher (`{teacher_recipe}`) | {teacher_row['parameters']:,} | "
             f"{100 * teacher_row['accuracy']:.1f} | — | {teacher_row['ece']:.3f} | — | {teacher_cell} |"]
    for i, (name, recipe, extra, distils_teacher) in enumerate(students):
        rows, seconds = [], []
        for seed in seeds:
            overrides = ["train.progress=false", f"train.seed={seed}", *extra]
            if distils_teacher:
                overrides.append(teacher_override)
            cfg = load_config(configs / f"{recipe}-{configs.name}.yaml", overrides)
            evaluated, cell = bench_run(cfg, out / f"{i}-{recipe}-seed{seed}")
            seconds.append(float(cell.strip("≥ ")))
            rows.append({r["model"]: r for r in evaluated["rows"]}.get("student") or evaluated["rows"][0])
        # agreement and KL only against the benchmark's teacher (self-distill has its own)
        agreement = mean_std([r["agreement"] for r in rows], 100) if distils_teacher else "—"
        kl = mean_std([r["kl_to_teacher"] for r in rows], digits=3) if distils_teacher else "—"
        lines.append(f"| {name} | {rows[0]['parameters']:,} | {mean_std([r['accuracy'] for r in rows], 100)} | "
                     f"{agreement} | {mean_std([r['ece'] for r in rows], digits=3)} | {kl} | "
                     f"{statistics.fmean(seconds):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-kd")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    mnist1d = bench(args.out / "mnist1d", args.seeds, MNIST1D, "teacher-mnist1d", MNIST1D_STUDENTS)
    print(mnist1d)
    digits = bench(args.out / "digits", args.seeds, DIGITS, "teacher-classifier-digits", DIGITS_STUDENTS)
    print(digits)
    command = "python " + " ".join(["bench/kd.py", *sys.argv[1:]])
    seeds = ", ".join(map(str, args.seeds))
    write_block(BEGIN, END, (
        "## Knowledge distillation of classifiers (MNIST-1D, digits)\n\n"
        f"{provenance(command)} Seeds {seeds}; accuracy, agreement (same argmax as "
        "the teacher), expected calibration error (15 bins) and KL to the teacher on the held-out "
        "split. 'params' counts every parameter of the exported model, the blocks an early exit "
        "skips included (dho: its second head). 'train s' is the whole run (training, export, "
        "evaluation) per seed; the teacher's is trained once.\n\n"
        "**MNIST-1D** (`configs/mnist1d/`, 1,000 held-out signals): the teacher is a 1-D CNN with "
        "64 channels trained on the 4,000 labelled signals; every student is the same 1-D CNN "
        "with 15 channels, 2,000 steps. Distilling students also see a 25,000-signal unlabelled "
        "transfer set (self-distill: scored by the label-only student of seed 0, its previous "
        "generation); bd-kd (online: its peer trains beside it) and hsd (the final exit teaches "
        "the early ones) have no pretrained teacher and draw half of every batch from the "
        "labelled signals (`method.labelled_share: 0.5`); hsd is scored at its exit after block "
        "1, beside the same truncated network trained on labels; the 10%-label rows keep 400 "
        "labels.\n\n"
        f"{mnist1d}\n\n"
        "**Digits** (`configs/digits/`, sklearn's 8×8 digits, 1,437 training / 360 held-out "
        "images): the teacher is a 2-D CNN with 32 channels; the student a 2-D CNN with 6 "
        "channels, 1,500 steps. There is no transfer set: kd distils on mixed pairs of "
        "training digits (`method.mixup: 1.0`, the teacher scoring the same mixed input).\n\n"
        f"{digits}\n"))

if __name__ == "__main__":
    main()
