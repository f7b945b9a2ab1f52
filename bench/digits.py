"""Benchmark: the digits teacher and its step-distilled students under the shipped recipes.

    .venv/bin/python bench/digits.py [--out runs/bench-digits] [--teacher RUN_DIR]

Stopped and rerun with the same --out, it reads back the runs it finished (bench_run).
Trains the teacher config (timed: the recipe should train in under 10 minutes on 2 cores),
or takes an already trained run of it (`--teacher`, e.g. the teacher of an earlier bench),
then every step-distillation method with a digits recipe (METHODS) from it, and measures
how close 10-step samplers land to a 200-step Heun solve. Writes the tables into
BENCHMARKS.md between the digits markers, with the command. Each table comes from one invocation, teacher and student rows measured
in the same process on the same noise and labels.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from common import REPO, bench_run, provenance, write_block

from distill.config import load_config
from distill.diffusion.samplers import fixed_noise, sample
from distill.report import comparison_rows
from distill.report.compare import format_metric, format_ms, format_speedup

CONFIGS = REPO / "configs" / "digits"
# every step-distillation recipe under configs/digits, in the order of the README's table
# (tests/test_bench_scripts.py checks each has its configs/digits/<method>-digits.yaml)
METHODS = ("progressive", "ode-pairs", "reflow", "instaflow", "slimflow", "cd", "mcd", "tscd", "scm", "meanflow", "flow-map", "mdt", "boot", "dmd2")
BEGIN, END = "<!-- digits:begin -->", "<!-- digits:end -->"
COLUMNS = ("kid", "fid", "fid_train", "precision", "recall", "class_accuracy")


def _cells(row: dict) -> str:
    return " | ".join(format_metric(row.get(m)) for m in COLUMNS)


def train_teacher(out: Path, overrides: tuple[str, ...] = ()) -> tuple[Path, str]:
    """Train the teacher recipe (with a student recipe's teacher `overrides`) into
    out/teacher-digits[-<overrides>], or read back the run a stopped benchmark finished
    there; (its run dir, a sentence on its time)."""
    teacher_cfg = load_config(CONFIGS / "teacher-digits.yaml", ["train.progress=false", *overrides])
    run_dir = out / "-".join(["teacher-digits", *(re.sub(r"\W+", "", o) for o in overrides)])
    _, seconds = bench_run(teacher_cfg, run_dir)
    return run_dir, f"trained in {float(seconds.strip('≥ ')) / 60:.1f} min (including its evaluation)"


def reuse_teacher(run_dir: Path) -> tuple[Path, str]:
    """An already trained run of the teacher recipe (its config must be the recipe's, up to the
    evaluation settings, which do not change the weights)."""
    recipe = load_config(CONFIGS / "teacher-digits.yaml", ["train.progress=false"])
    found = run_dir / "config.yaml"
    if not (run_dir / "student").is_dir() or not found.is_file():
        raise SystemExit(f"--teacher {run_dir}: not a finished run (no student/ or config.yaml); "
                         "train configs/digits/teacher-digits.yaml first, or drop --teacher")
    trained = load_config(found, ["train.progress=false"]).model_dump(exclude={"eval"})
    if trained != recipe.model_dump(exclude={"eval"}):
        raise SystemExit(f"--teacher {run_dir}: its config.yaml is not configs/digits/teacher-digits.yaml; "
                         "the benchmark's teacher must be the shipped recipe")
    return run_dir, f"was trained before this run ({run_dir}) and reused"


def bench(out: Path, teacher_dir: Path | None = None) -> tuple[str, str, str]:
    """The students' table (a recipe whose teacher has overrides, such as meanflow's gentle time
    embedding, is run against that teacher, trained here, with its teacher rows printed above
    it), the solver table and a sentence on the teacher."""
    teacher_dir, teacher_note = reuse_teacher(teacher_dir) if teacher_dir else train_teacher(out)

    lines = ["| model | sampler | NFE | KID | FID | FID train | precision | recall | class acc. | ms / sample | run s | ≡ teacher NFE | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    floor_done, teachers_shown = False, set()
    for method in METHODS:
        overrides = tuple(load_config(CONFIGS / f"{method}-digits.yaml").teacher.overrides)
        own_dir, own_note = train_teacher(out, overrides) if overrides else (teacher_dir, "")
        cfg = load_config(CONFIGS / f"{method}-digits.yaml",
                          ["train.progress=false", f"teacher={{name: run, path: {own_dir}}}"])
        eval_data, seconds = bench_run(cfg, out / f"{method}-digits")
        if not floor_done:
            floor_done = True
            lines.append(f"| training images ({eval_data['floor_samples']}, the floor) | — | — | "
                         f"{_cells(eval_data['floor'])} | | | | |")
        if own_dir not in teachers_shown:
            teachers_shown.add(own_dir)
            label = "teacher" + "".join(f" `{o}`" for o in overrides)
            if overrides:
                teacher_note += f"; the teacher with {', '.join(f'`{o}`' for o in overrides)} was {own_note}"
            for r in eval_data["rows"]:
                if r["model"] == "teacher":
                    lines.append(f"| {label} | {r['sampler']} | {r['nfe']} | {_cells(r)} | "
                                 f"{format_ms(r['ms_per_sample'])} | | | |")
        for r in comparison_rows(eval_data):
            lines.append(f"| **{method}** | {r['sampler']} | {r['nfe']} | {_cells(r)} | "
                         f"{format_ms(r['ms_per_sample'])} | {seconds} | {r['match_nfe'] or '—'} | "
                         f"{format_speedup(r['speedup'], r['speedup_lower_bound'])} |")

    from distill.diffusion.export import load_denoiser

    teacher, _ = load_denoiser(teacher_dir / "student")
    noise, labels = fixed_noise(256, (1, 8, 8), seed=7), torch.arange(256) % 10
    solver_lines = ["| steps | " + " | ".join(("euler", "heun", "ddim", "dpm++2m")) + " |",
                    "|---|---|---|---|---|"]
    with torch.inference_mode():
        reference = sample(teacher, noise, 200, "heun", cond=labels)
        for steps in (4, 10, 20):
            errors = [float((sample(teacher, noise, steps, s, cond=labels) - reference).flatten(1)
                            .norm(dim=1).mean()) for s in ("euler", "heun", "ddim", "dpm++2m")]
            solver_lines.append(f"| {steps} | " + " | ".join(f"{e:.3f}" for e in errors) + " |")
    return "\n".join(lines), "\n".join(solver_lines), teacher_note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-digits")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="a finished run of configs/digits/teacher-digits.yaml to reuse")
    args = parser.parse_args()
    table, solvers, teacher_note = bench(args.out, args.teacher)
    print(table, solvers, sep="\n\n")
    command = "python " + " ".join(["bench/digits.py", *sys.argv[1:]])
    write_block(BEGIN, END, (
        f"## Step distillation on digits (8×8, class-conditional)\n\n{provenance(command)} "
        f"The teacher recipe (`configs/digits/teacher-digits.yaml`, UNet2DModel "
        f"with 32/64 channels, 3000 steps) {teacher_note}.\n\n"
        f"{table}\n\nKID (with its 95% interval, the primary metric), FID, precision and recall "
        "against the held-out test images in the features of the library's digits classifier "
        "(not Inception FID); FID train: FID against the training images (it rewards copying "
        "them); class accuracy: the classifier's label for conditional samples vs the requested "
        "one. 1,000 generated samples per row; the floor is as many training images against the "
        "same held-out ones. 'run s' is the student run "
        "(training, teacher pairs, evaluation).\n\n"
        "Mean L2 distance to the teacher's 200-step Heun solution (256 samples, same noise and "
        f"labels), by sampler and steps:\n\n{solvers}\n"))


if __name__ == "__main__":
    main()
