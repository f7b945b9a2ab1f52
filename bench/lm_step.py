"""One LM-distillation training step, ours against TRL's `GKDTrainer`, in a fresh process.

    .venv/bin/python bench/lm_step.py {distill,trl} --divergence jsd --batch 8 --block 512

Both sides train the same student (the 2-layer, 128-wide Llama of
`configs/lm/lm-kd-smollm2.yaml`, same seed) from the same frozen SmolLM2-135M-Instruct teacher
on the same token blocks of python-docs, every position a target, off-policy (GKD's λ = 0) with
the same divergence at temperature 1 and AdamW. A step is: teacher forward (no grad) + student
forward/backward + optimiser step. `distill` is `lm-kd` with the dense live teacher (chunked
vocabulary loss); `trl` is `GKDTrainer.training_step` (full logits of both models) followed by
its optimiser's step. Prints one JSON line: tokens/s (best of `--repeats` timed steps after one
warm-up step), the peak resident memory of the steps above the memory before them, and the
total peak, MiB.

Divergences: `forward-kl` (GKD's beta = 0), `jsd` (generalized JSD at beta = 0.5, GKD's
default), `reverse-kl` (GKD's beta = 1).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import REPO, peak_rss_mib, reset_peak_rss, rss_mib

from distill.config import load_config
from distill.lm.task import build_lm

GKD_BETA = {"forward-kl": 0.0, "jsd": 0.5, "reverse-kl": 1.0}
LR = 3e-3


def distill_step(method: Any, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    """Our step: the method's losses (teacher forward inside), backward, AdamW step."""
    optimizer = torch.optim.AdamW(method.student.parameters(), lr=LR)
    method.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses = method(method.prepare_batch(batch, 1), group="student", step=0)
        sum(losses.values()).backward()
        optimizer.step()
    return step


def trl_step(method: Any, tokenizer: Any, batch: dict[str, torch.Tensor], divergence: str,
             out: Path) -> Callable[[], None]:
    """TRL's step on the same models and tokens: GKDTrainer.training_step + its optimiser."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    ids = batch["input_ids"]
    args = GKDConfig(output_dir=str(out), per_device_train_batch_size=len(ids), max_length=ids.shape[1],
                     lmbda=0.0, beta=GKD_BETA[divergence], temperature=1.0, learning_rate=LR,
                     report_to="none", use_cpu=True, bf16=False, fp16=False, max_steps=10,
                     disable_dropout=True, save_strategy="no", logging_strategy="no")
    dummy = Dataset.from_dict({"messages": [[{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GKDTrainer(model=method.student, teacher_model=method.teacher, args=args,
                             train_dataset=dummy, processing_class=tokenizer)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets before each step
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    def step() -> None:
        trainer.training_step(trainer.model, dict(inputs))
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=["distill", "trl"])
    parser.add_argument("--divergence", choices=sorted(GKD_BETA), default="jsd")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    overrides = ["method.signal=dense", f"method.divergence={args.divergence}", "method.beta=0.5",
                 "method.alpha=1.0", f"data.block_size={args.block}", "train.progress=false"]
    cfg = load_config(REPO / "configs" / "lm" / "lm-kd-smollm2.yaml", overrides)
    with tempfile.TemporaryDirectory() as tmp:
        _, _, meta, method = build_lm(cfg, Path(tmp))
        rows = method.train_data()
        if len(rows["input_ids"]) < args.batch:
            raise SystemExit(f"python-docs gives {len(rows['input_ids'])} blocks of {args.block} tokens; "
                             f"--batch {args.batch} needs more")
        batch = {k: v[: args.batch] for k, v in rows.items()}
        step = (distill_step(method, batch) if args.side == "distill"
                else trl_step(method, meta["tokenizer"], batch, args.divergence, Path(tmp) / "trl"))
        step()  # warm-up (first-call allocations, TRL's lazy set-up)
        reset_peak_rss()
        base = rss_mib()
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - start)
        peak = peak_rss_mib()
    tokens = args.batch * args.block
    print(json.dumps({"side": args.side, "divergence": args.divergence, "tokens": tokens,
                      "tokens_per_s": tokens / best, "step_s": best, "peak_extra_mib": peak - base,
                      "peak_mib": peak, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
