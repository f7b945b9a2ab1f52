"""Benchmark: each toy student's ≡ teacher NFE at the CI gates' settings, over seeds, beside
its ablation: the "key effects" of the step-distillation methods.

    .venv/bin/python bench/gate_nfe.py [--out runs/bench-gate-nfe] [--seeds 0 1 2] [--methods ...] [--update] [--no-write]

Every step-distillation recipe on 8gaussians (multi-student and dmd-decoupled: on the 2-class
teacher, 8gaussians-2classes), shortened as its CI gate runs it (tests/test_gates_toy2d.SHORT),
evaluated with the resolved toy metric (MMD² with 95% intervals at 40,000 samples) against the
teacher at 1-64 steps: per seed, the student's MMD² and its ≡ teacher NFE (the cheapest
teacher NFE not significantly worse than it), and the same at the first seed with the method's
key mechanism switched off (tests/test_gates_toy2d.ABLATIONS). A gate "the student matches the
teacher at >= K NFE, its ablation does not" is set from these. Writes BENCHMARKS.md's gate-nfe
section (`--no-write`: print only, e.g. to fill the run cache from several processes;
`--update`: replace only the rows of `--methods` in the section, which then names the
invocation each group of rows comes from).
"""

from __future__ import annotations

import argparse
import sys

from common import REPO, bench_run, provenance, write_block

sys.path.insert(0, str(REPO / "tests"))
from step_distillation import METHODS  # noqa: E402

from distill.config import load_config  # noqa: E402
from distill.report import comparison_rows  # noqa: E402
from test_gates_toy2d import ABLATIONS, SHORT  # noqa: E402  (the gates' own settings and ablations)

BEGIN, END = "<!-- gate-nfe:begin -->", "<!-- gate-nfe:end -->"
TWO_CLASSES = ("multi-student", "dmd-decoupled")  # recipes of the 2-class teacher only


def rows_by_steps(method: str, seed: int, out, extra: tuple[str, ...] = ()) -> dict[int, tuple[float, str]]:
    """{student steps: (MMD², ≡ teacher NFE as text)} of one gate-length run."""
    dataset = "8gaussians-2classes" if method in TWO_CLASSES else "8gaussians"
    cfg = load_config(REPO / "configs" / "toy2d" / f"{method}-{dataset}.yaml",
                      ["train.progress=false", "eval.nfe=[1,2,4,8,16,32,64]", "eval.timing_repeats=0",
                       f"train.seed={seed}", *SHORT.get(method, []), *extra])
    tag = "".join("-" + "".join(c for c in o if c.isalnum()) for o in extra)
    eval_data, _ = bench_run(cfg, out / f"{method}-s{seed}{tag}")
    found = {}
    for row in comparison_rows(eval_data):
        match = f"≥ {row['match_nfe'] or 64}" if row["speedup_lower_bound"] else str(row["match_nfe"] or "–")
        found[row["nfe"]] = (row["mmd"], match)
    return found


def method_of(row: str) -> str:
    return row.split("|")[1].strip()


def merged_rows(text: str, lines: list[str], methods: list[str], made: str) -> tuple[list[str], str]:
    """`lines` (header, separator, the rows of `methods`) merged into the gate-nfe section of
    `text` (BENCHMARKS.md):
    the rows of other methods kept, everything in the benchmark's method order, and the
    provenance naming both invocations. One level: a section updated before can be updated
    again only with (at least) the methods it was updated with."""
    if BEGIN not in text:
        return lines, made
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    line = next(x for x in block.splitlines() if x.startswith(("Command:", "Rows of ")))
    if line.startswith("Rows of "):
        before = line[len("Rows of "):].split(":", 1)[0].split(", ")
        if not set(before) <= set(methods):
            raise SystemExit(f"the gate-nfe section already has rows of {', '.join(before)} from an "
                             "update; pass them in --methods too, or rerun the whole table")
        line = line.split(" The other rows: ", 1)[1]
    earlier = line.split(" Seeds ", 1)[0]
    kept = [x for x in block.splitlines() if x.startswith("| ") and not x.startswith("| method |")
            and method_of(x) not in methods]
    fresh = lines[2:]
    rows = [x for m in METHODS for x in (fresh if m in methods else kept) if method_of(x) == m]
    rows += [x for x in kept if method_of(x) not in METHODS]
    return lines[:2] + rows, f"Rows of {', '.join(methods)}: {made} The other rows: {earlier}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=lambda p: REPO / p, default=REPO / "runs" / "bench-gate-nfe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--no-write", action="store_true", help="print the rows, leave BENCHMARKS.md alone")
    parser.add_argument("--update", action="store_true", help=(
        "replace only the rows of --methods in BENCHMARKS.md's section, keep the others and their provenance"))
    args = parser.parse_args()
    lines = ["| method | student steps | gate settings | MMD² per seed | ≡ teacher NFE per seed | ablation (seed "
             f"{args.seeds[0]}) | its MMD² | its ≡ teacher NFE |", "|---|---|---|---|---|---|---|---|"]
    for method in args.methods:
        per_seed = [rows_by_steps(method, seed, args.out) for seed in args.seeds]
        ablation = ABLATIONS.get(method)
        ablated = rows_by_steps(method, args.seeds[0], args.out, ablation) if ablation else {}
        for nfe in sorted(per_seed[0]):
            values = [found[nfe] for found in per_seed]
            abl = ablated.get(nfe)
            lines.append(
                f"| {method} | {nfe} | {' '.join(SHORT.get(method, [])) or 'the recipe'} | "
                f"{' / '.join(f'{v:.4f}' for v, _ in values)} | {' / '.join(m for _, m in values)} | "
                f"{' '.join(ablation) if ablation else '–'} | {f'{abl[0]:.4f}' if abl else '–'} | "
                f"{abl[1] if abl else '–'} |")
            print(lines[-1], flush=True)
    if args.no_write:
        return
    command = "python " + " ".join(["bench/gate_nfe.py", *sys.argv[1:]])
    made = provenance(command)
    if args.update:
        lines, made = merged_rows((REPO / "BENCHMARKS.md").read_text(), lines, args.methods, made)
    write_block(BEGIN, END, (
        "## ≡ teacher NFE at the CI gates' settings, and the key mechanisms' ablations (8gaussians)\n\n"
        f"{made} Seeds {', '.join(map(str, args.seeds))}; each recipe shortened as "
        "its gate runs it (`tests/test_gates_toy2d.SHORT`; multi-student and dmd-decoupled on the "
        "2-class teacher); MMD² (RBF at 0.05 and 1) over 40,000 samples; ≡ teacher NFE: the "
        "cheapest teacher NFE (1–64 Euler steps) whose 95% interval is not worse than the "
        "student's (≥ 64: better than every teacher row; dmd-decoupled's teacher rows are the "
        "teacher guided at its CFG scale 3, which its student beats against the data). The "
        "ablation switches the method's key mechanism off (–: none fails the gate at this scale; "
        "the gates' docstrings say what was tried) "
        "(`tests/test_gates_toy2d.ABLATIONS`).\n\n"
        + "\n".join(lines)))


if __name__ == "__main__":
    main()
