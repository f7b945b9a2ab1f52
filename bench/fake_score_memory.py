"""Peak memory of `dmd2` training steps on the digits UNet with the fake score as a full
trainable copy of the teacher vs LoRA adapters on the teacher's shared frozen weights (issue 5).

Each variant runs in a fresh process: build data, teacher and student (the digits teacher
recipe's UNet, untrained weights: memory does not depend on their values), note the peak
resident memory, then build the method (fake score, optimisers) and run `STEPS` trainer steps
(a fake-score update and a generator update each, batch `BATCH`); reported: the peak resident
memory above the set-up, the fake score's trainable parameters, and ms per step (median of the
steps after the first; the variants run one after the other in one invocation).

    python bench/fake_score_memory.py            # writes the block into BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from common import REPO, machine, peak_rss_mib, write_block

from distill.config import load_config
from distill.diffusion.methods.distribution_matching import DMD2

STEPS = 6
VARIANTS = {"copy": {"kind": "copy"}, "lora (rank 16)": {"kind": "lora", "rank": 16},
            "lora (rank 4)": {"kind": "lora", "rank": 4}}
# (label, overrides of the teacher recipe's UNet, batch): the recipe's UNet at its training
# batch, where activations dominate; and a wider UNet at a small batch, where weights do
SETTINGS = [("digits UNet (recipe), batch 128", [], 128),
            ("wider UNet (channels [128, 256], 2 layers per block), batch 8",
             ["student.channels=[128,256]", "student.layers_per_block=2"], 8)]


def measure(fake_score: dict, overrides: list[str], batch_size: int) -> dict:
    """In this process: peak RSS above the set-up (MiB), trainable fake-score parameters, ms/step."""
    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / "digits" / "teacher-digits.yaml", overrides)
    data = cfg.data.build()
    teacher = cfg.student.make_denoiser(data.shape, data.num_classes).requires_grad_(False).eval()
    student = cfg.student.make_denoiser(data.shape, data.num_classes)
    student.load_state_dict(teacher.state_dict())
    base = peak_rss_mib()
    method = DMD2(DMD2.Config(fake_updates=1, fake_score=fake_score), student, teacher, data).train()
    groups = method.param_groups()
    optimisers = {g.name: torch.optim.AdamW(g.parameters, lr=1e-4) for g in groups}
    batch = {"x": data.train[:batch_size], "y": data.train_labels[:batch_size]}
    times = []
    for step in range(STEPS):
        start = time.perf_counter()
        for group in groups:
            loss = sum(method(batch, group.name, step).values())
            loss.backward()
            optimisers[group.name].step()
            optimisers[group.name].zero_grad(set_to_none=True)
        times.append(1000 * (time.perf_counter() - start))
    trainable = sum(p.numel() for p in method.fake.parameters() if p.requires_grad)
    return {"peak_extra_mib": peak_rss_mib() - base, "fake_trainable": trainable,
            "teacher_params": sum(p.numel() for p in teacher.parameters()),
            "ms_per_step": statistics.median(times[1:])}


def in_fresh_process(fake_score: dict, overrides: list[str], batch_size: int) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(REPO / 'bench')!r}); import fake_score_memory as m; "
            f"print(json.dumps(m.measure({fake_score!r}, {overrides!r}, {batch_size})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    lines = ["| network | fake score | trainable fake-score parameters | peak memory above set-up, MiB | vs copy | ms per step | vs copy |",
             "|---|---|---|---|---|---|---|"]
    for label, overrides, batch_size in SETTINGS:
        results = {name: in_fresh_process(spec, overrides, batch_size) for name, spec in VARIANTS.items()}
        copy = results["copy"]
        for name, r in results.items():
            lines.append(f"| {label} ({copy['teacher_params']:,} parameters) | {name} | {r['fake_trainable']:,} | "
                         f"{r['peak_extra_mib']:.0f} | {r['peak_extra_mib'] / copy['peak_extra_mib']:.2f}× | "
                         f"{r['ms_per_step']:.0f} | {r['ms_per_step'] / copy['ms_per_step']:.2f}× |")
    body = ("## dmd2 fake score: full copy vs LoRA (digits UNet)\n\n"
            f"`python bench/fake_score_memory.py` ({machine()}). The digits teacher recipe's UNet "
            "and a wider one (untrained weights: memory does not depend on their values), "
            f"{STEPS} trainer steps (a fake-score and a generator update each, AdamW); each variant in a "
            "fresh process; peak memory = peak resident memory above the set-up (data, teacher, "
            "student). The LoRA fake score keeps no second copy of the teacher's weights (its frozen "
            "weights are the teacher's tensors) and no optimiser state for them.\n\n" + "\n".join(lines) + "\n")
    write_block("<!-- bench:fake-score-memory -->", "<!-- /bench:fake-score-memory -->", body)
    print(body)


if __name__ == "__main__":
    main()
