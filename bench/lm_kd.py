"""Benchmark: LM distillation from SmolLM2-135M-Instruct.

    .venv/bin/python bench/lm_kd.py [--out runs/bench-lm] [--skip-training] [--skip-trl]
                                    [--signals-only] [--seeds 0 1 2]

1. The chunked vocabulary loss against the naive one at SmolLM2's vocabulary (49,152) and
   hidden size (576) on 8 × 512 tokens: forward KL to the dense teacher (teacher hidden states
   + output weight, as `lm-kd` with signal dense) and cross-entropy, loss + backward. Peak extra
   memory is each variant's peak resident memory above its set-up, measured in a fresh process
   per variant; time is best of 3, naive and chunked alternating in one process.
2. Teacher signals: `lm-kd` with the dense live teacher vs cached top-k (k = 8, 32, 128) and
   the cross-entropy student, same student, tokens and steps (the recipes at 150 steps), on
   the held-out python-docs blocks, once per seed (mean ± std); its own block in BENCHMARKS.md,
   which `--signals-only` rewrites alone.
3. One training step against TRL's `GKDTrainer` (`bench/lm_step.py`, one fresh process per
   side and divergence, run one after another): same teacher, student, 8 × 512 tokens,
   off-policy, AdamW; tokens/s and peak memory side by side.
Writes the tables into BENCHMARKS.md between the lm (and lm-signals) markers, with the command.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import REPO, lm_student_row, lm_table, machine, write_block

from distill.config import load_config
from distill.lm.chunked import chunked_vocab_loss, naive_vocab_loss
from distill.lm.methods import LMMethodConfig
from distill.lm.targets import DenseTargets, token_divergence

BEGIN, END = "<!-- lm:begin -->", "<!-- lm:end -->"
SIGNALS_BEGIN, SIGNALS_END = "<!-- lm-signals:begin -->", "<!-- lm-signals:end -->"  # right below the lm block
V, D, TOKENS = 49152, 576, 8 * 512
CHUNK = LMMethodConfig.model_fields["chunk_size"].default  # the methods' default
CONFIGS = REPO / "configs" / "lm"
TRAIN = ["train.steps=150", "train.batch_size=8", "train.warmup_steps=10", "data.max_train_blocks=256",
         "data.max_test_blocks=48", "train.progress=false", "eval.timing_repeats=0"]


def loss_problem(kind: str):
    """(hidden, weight, row_loss, row_weights) of one benchmark loss, seeded."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(TOKENS, D, generator=gen, requires_grad=True)
    weight = (torch.randn(V, D, generator=gen) * 0.02).requires_grad_()
    weights = torch.full((TOKENS,), 1.0 / TOKENS)
    if kind == "ce":
        labels = torch.randint(0, V, (TOKENS,), generator=gen)
        return hidden, weight, lambda logits, rows: {"ce": F.cross_entropy(logits, labels[rows], reduction="none")}, weights
    teacher = DenseTargets(torch.randn(TOKENS, D, generator=gen), torch.randn(V, D, generator=gen) * 0.02)
    return hidden, weight, lambda logits, rows: {"kd": token_divergence(logits, teacher.chunk(rows), name="forward-kl")}, weights


def one_step(kind: str, chunked: bool, chunk: int = CHUNK) -> None:
    hidden, weight, row_loss, weights = loss_problem(kind)
    if chunked:
        loss, _ = chunked_vocab_loss(hidden, weight, row_loss, weights, chunk_size=chunk)
    else:
        loss = naive_vocab_loss(hidden, weight, row_loss, weights)
    loss.backward()


def peak_extra_mib(kind: str, chunked: bool, chunk: int = CHUNK) -> float:
    """Run one loss + backward in a fresh process; its peak RSS above the set-up, MiB."""
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import lm_kd; from common import peak_rss_mib; "
            f"p = lm_kd.loss_problem({kind!r}); base = peak_rss_mib(); "
            f"del p; lm_kd.one_step({kind!r}, {chunked}, {chunk}); print(peak_rss_mib() - base)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def loss_table() -> str:
    lines = [f"| loss (8 × 512 tokens, vocab 49,152, hidden 576, chunks of {CHUNK} rows) | naive peak extra MiB | chunked peak extra MiB | memory ratio | naive s | chunked s | time ratio |",
             "|---|---|---|---|---|---|---|"]
    for kind, label in (("kd", "forward KL to the dense teacher"), ("ce", "cross-entropy")):
        naive_mem, chunk_mem = peak_extra_mib(kind, False), peak_extra_mib(kind, True)
        best = {False: float("inf"), True: float("inf")}
        one_step(kind, True)  # warm-up
        for _ in range(3):
            for chunked in (False, True):
                start = time.perf_counter()
                one_step(kind, chunked)
                best[chunked] = min(best[chunked], time.perf_counter() - start)
        lines.append(f"| {label} | {naive_mem:.0f} | {chunk_mem:.0f} | {chunk_mem / naive_mem:.2f} | "
                     f"{best[False]:.2f} | {best[True]:.2f} | {best[True] / best[False]:.2f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def signal_table(out: Path, seeds: list[int]) -> str:
    """The cross-entropy student, lm-kd with the dense live teacher and with cached top-k
    (k = 128, 32, 8), each trained once per seed; mean ± std over the seeds."""
    variants = [("cross-entropy only (`lm-ce`)", "lm-ce", []),
                ("lm-kd, dense live teacher", "lm-kd", ["method.signal=dense"])]
    cache = f"method.cache_dir={out / 'teacher-cache'}"  # built once at k = 128; its prefixes serve 32, 8
    variants += [(f"lm-kd, cached top-{k} + tail bucket", "lm-kd", ["method.signal=cache", f"method.top_k={k}", cache])
                 for k in (128, 32, 8)]
    lines, teacher_row = [], {}
    for label, recipe, overrides in variants:
        tag = "-".join([recipe, *(o.split("=")[1] for o in overrides[:2])])
        runs = [(load_config(CONFIGS / f"{recipe}-smollm2.yaml", [*TRAIN, *overrides, f"train.seed={seed}"]),
                 out / f"{tag}-seed{seed}") for seed in seeds]
        row, teacher_row = lm_student_row(label, runs)
        lines.append(row)
    return lm_table(f"| teacher (SmolLM2-135M-Instruct, {teacher_row['parameters']:,} parameters) | "
                    f"{teacher_row['perplexity']:.1f} | — | — | — |", lines)


def trl_step_table() -> str:
    """Ours (`lm-kd`, dense live teacher, chunked loss) vs TRL's GKDTrainer, one step each."""
    lines = ["| divergence (8 × 512 tokens) | distill tokens/s | TRL tokens/s | speed ratio | "
             "distill peak extra MiB | TRL peak extra MiB | extra-memory ratio | distill peak MiB | "
             "TRL peak MiB | peak ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    for divergence, label in (("jsd", "generalized JSD, beta 0.5 (GKD's default)"),
                              ("forward-kl", "forward KL (GKD's beta 0)")):
        side = {}
        for name in ("distill", "trl"):
            out = subprocess.run([sys.executable, str(REPO / "bench" / "lm_step.py"), name,
                                  "--divergence", divergence], capture_output=True, text=True, check=True)
            side[name] = json.loads(out.stdout.strip().splitlines()[-1])
        ours, trl = side["distill"], side["trl"]
        lines.append(f"| {label} | {ours['tokens_per_s']:.0f} | {trl['tokens_per_s']:.0f} | "
                     f"{ours['tokens_per_s'] / trl['tokens_per_s']:.2f}× | {ours['peak_extra_mib']:.0f} | "
                     f"{trl['peak_extra_mib']:.0f} | {ours['peak_extra_mib'] / trl['peak_extra_mib']:.2f} | "
                     f"{ours['peak_mib']:.0f} | {trl['peak_mib']:.0f} | {ours['peak_mib'] / trl['peak_mib']:.2f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-lm")
    parser.add_argument("--skip-training", action="store_true", help="no teacher-signal table")
    parser.add_argument("--skip-trl", action="store_true", help="no TRL GKDTrainer comparison")
    parser.add_argument("--signals-only", action="store_true",
                        help="only the teacher-signal table (its own block); the loss and TRL tables stay")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of the teacher-signal runs (mean ± std over them)")
    args = parser.parse_args()
    if not (args.skip_trl or args.signals_only) and importlib.util.find_spec("trl") is None:
        raise SystemExit("the TRL comparison needs trl: `pip install -e '.[bench]'` (make bench "
                         "does), or pass --skip-trl")  # fail before the long tables
    command = "python " + " ".join(["bench/lm_kd.py", *sys.argv[1:]])
    if not args.signals_only:
        write_block(BEGIN, END, step_body(command, loss_table(), "" if args.skip_trl else trl_step_table()))
    if not args.skip_training:
        signals = signal_table(args.out, args.seeds)
        write_block(SIGNALS_BEGIN, SIGNALS_END, (
            f"Teacher signals (command: `{command}`, {machine()}): the 2-layer, 128-wide Llama "
            "student of `configs/lm/lm-kd-smollm2.yaml` (6.7M parameters, tied embeddings), 150 "
            "steps of 8 blocks of 64 tokens from the first 256 training blocks of python-docs, "
            f"scored on 48 held-out blocks; mean ± std over seeds {', '.join(map(str, args.seeds))} "
            "(one run per seed; 'run s' includes the evaluation, and for the top-128 row's first "
            "seed building the cache that every cached row reads):\n\n" + signals + "\n"))


def step_body(command: str, losses: str, steps: str) -> str:
    """The lm block: the chunked-loss table and, when run, the TRL step table."""
    body = (f"## Language-model distillation (SmolLM2-135M-Instruct)\n\nCommand: `{command}` "
            f"({machine()}).\n\nChunked vocabulary loss vs the naive one (loss + backward; peak "
            "extra memory = peak resident memory above the set-up, one fresh process per "
            "variant; times best of 3, alternating, same process):\n\n" + losses + "\n")
    if steps:
        from trl import __version__ as trl_version

        body += ("\nOne training step against TRL's `GKDTrainer` (trl " + trl_version + "): the same "
                 "SmolLM2-135M-Instruct teacher and 2-layer student, 8 blocks of 512 python-docs "
                 "tokens, every position a target, off-policy (GKD's lambda 0), temperature 1, "
                 "AdamW. A step is the teacher forward, the student forward and backward and the "
                 "optimiser step; ours is `lm-kd` with the dense live teacher (chunked loss), TRL's "
                 "is `GKDTrainer.training_step` (full logits of both models) plus its optimiser. "
                 "Tokens/s from the best of 2 steps after a warm-up; peak extra = peak resident "
                 "memory of those steps above the memory before them; peak = the process's total "
                 "peak, models included. One fresh process per cell (`bench/lm_step.py`):\n\n"
                 + steps + "\n")
    return body


if __name__ == "__main__":
    main()
