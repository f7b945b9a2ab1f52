"""Benchmark: sequence-level vs word-level KD (Kim & Rush 2016) from SmolLM2-135M-Instruct.

    .venv/bin/python bench/lm_seq_kd.py [--out runs/bench-lm-seq] [--seeds 0 1 2]

1. The teacher completes 96 prompts (24 Python topics × 4 templates, written below; 64 new
   tokens each, temperature 0.7; `distill lm generate`, resumable, kept in --out).
2. The 2-layer student of `configs/lm/seq-kd-smollm2.yaml` learns them, with a quarter of the
   prompts held out (whole prompts: no held-out prompt is trained on), three ways at equal
   steps and tokens: `seq-kd` (cross-entropy on the teacher's sampled tokens: Seq-KD), `lm-kd`
   alpha 1 (forward KL to the teacher's top-64 distribution at every position of the same
   text: Word-KD), `lm-kd` alpha 0.5 (both: Seq-KD + Word-KD, the paper's best).
3. Scored on the held-out prompts' completions: the student's perplexity of the teacher's
   text, per-token KL(teacher ‖ student) and top-1 agreement; mean ± std over the seeds.

Writes the table into BENCHMARKS.md between the lm-seq-kd markers, with the command.
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import product
from pathlib import Path

from common import REPO, lm_student_row, lm_table, machine, write_block

from distill.config import load_config
from distill.lm.task import generate_for

BEGIN, END = "<!-- lm-seq-kd:begin -->", "<!-- lm-seq-kd:end -->"
ANCHOR = "<!-- distribution-matching:begin -->"  # the block sits after the LM blocks
RECIPE = REPO / "configs" / "lm" / "seq-kd-smollm2.yaml"
TOPICS = ("list comprehension", "dictionary", "tuple", "set", "generator", "decorator",
          "context manager", "lambda function", "class", "module", "exception", "iterator",
          "f-string", "virtual environment", "type hint", "dataclass", "unit test", "slice",
          "default argument", "global variable", "recursion", "file object", "enumerate call",
          "zip call")
TEMPLATES = ("Explain what a Python {} is in two sentences.",
             "Give a short code example that uses a Python {}.",
             "What is a common mistake people make with a Python {}?",
             "When should I use a Python {}?")
GENERATION = {"max_new_tokens": 64, "temperature": 0.7, "seed": 0}
STUDENTS = (("Seq-KD: `seq-kd` (cross-entropy on the teacher's samples)", ["method={name: seq-kd}"]),
            ("Word-KD: `lm-kd`, alpha 1 (forward KL to the teacher's top-64)",
             ["method={name: lm-kd, divergence: forward-kl, alpha: 1.0, signal: cache, top_k: 64}"]),
            ("Seq-KD + Word-KD: `lm-kd`, alpha 0.5",
             ["method={name: lm-kd, divergence: forward-kl, alpha: 0.5, signal: cache, top_k: 64}"]))


def write_prompts(path: Path) -> int:
    """The benchmark's prompt file, one prompt per line; returns how many."""
    prompts = [template.format(topic) for topic, template in product(TOPICS, TEMPLATES)]
    path.write_text("\n".join(prompts) + "\n")
    return len(prompts)


def student_table(out: Path, generations: Path, seeds: list[int]) -> str:
    """One row per student (and the teacher's own perplexity of its text); mean ± std over seeds."""
    lines, teacher_row = [], {}
    for i, (label, overrides) in enumerate(STUDENTS):
        cache = [f"method.cache_dir={out / 'teacher-cache'}"] if "lm-kd" in overrides[0] else []
        runs = [(load_config(RECIPE, [f"data.path={generations}", "data.test_fraction=0.25", "train.progress=false",
                                      "eval.timing_repeats=0", f"train.seed={seed}", *overrides, *cache]),
                 out / f"student{i}-seed{seed}") for seed in seeds]
        row, teacher_row = lm_student_row(label, runs)
        lines.append(row)
    return lm_table(f"| teacher (its own text) | {teacher_row['perplexity']:.1f} | — | — | — |", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-lm-seq")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(["bench/lm_seq_kd.py", *sys.argv[1:]])
    prompts, generations = args.out / "prompts.txt", args.out / "generations.jsonl"
    n = write_prompts(prompts)
    start = time.perf_counter()
    generate_for(load_config(RECIPE, ["train.progress=true"]), prompts, generations, **GENERATION)
    gen_seconds = time.perf_counter() - start
    table = student_table(args.out, generations, args.seeds)
    steps = load_config(RECIPE).train
    write_block(BEGIN, END, (
        f"Sequence-level vs word-level KD (command: `{command}`, {machine()}): SmolLM2-135M-Instruct "
        f"completes {n} prompts (24 Python topics × 4 templates, {GENERATION['max_new_tokens']} new tokens, "
        f"temperature {GENERATION['temperature']}; {gen_seconds:.0f} s in this run, 0 when read back); the "
        f"2-layer student of `configs/lm/seq-kd-smollm2.yaml` trains {steps.steps} steps of {steps.batch_size} "
        "blocks on the completions of three quarters of the prompts and is scored on the completions of "
        f"the held-out quarter; mean ± std over seeds {', '.join(map(str, args.seeds))}:\n\n" + table + "\n"),
        before=ANCHOR)


if __name__ == "__main__":
    main()
