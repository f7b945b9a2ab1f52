"""Launched by test_ddp.py under `accelerate launch --num_processes 2 --cpu`: trains a tiny
flow teacher with the real Trainer and saves each process's final weights."""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate.utils import set_seed
from safetensors.torch import save_file

from distill.config import load_config
from distill.runner import build
from distill.train.trainer import Trainer, make_accelerator

config, out = Path(sys.argv[1]), Path(sys.argv[2])
cfg = load_config(config, ["train.steps=30", "train.grad_accum=2"])
accelerator = make_accelerator(cfg.train)
assert accelerator.num_processes == 2, f"expected 2 processes, got {accelerator.num_processes}"
set_seed(cfg.train.seed, device_specific=True)  # different noise on each process
data, _, _, method = build(cfg)
trainer = Trainer(method, cfg.train, out / "run", data.training_rows(), accelerator)
trainer.fit()
rank = accelerator.process_index
state = {k: v.contiguous() for k, v in trainer.method.student.state_dict().items()}
save_file(state, out / f"rank{rank}.safetensors")
first_batch = trainer.stream.next()
save_file({"batch": first_batch["x"].contiguous()}, out / f"batch{rank}.safetensors")
