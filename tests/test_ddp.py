"""Two CPU processes (gloo) through `accelerate launch`: replicas stay identical, each
process sees its own shard of every batch, and `distill run` works unchanged.

On a machine without GPUs, accelerate 1.x starts several CPU processes only through its
torchrun path (`--multi_gpu`, which then selects MULTI_CPU with gloo); `--cpu
--num_processes 2` starts a single process unless MPI is installed. See docs/architecture.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_teacher_yaml

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def launch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([*LAUNCH, *args], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    if result.returncode != 0:
        pytest.fail(f"accelerate launch failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def test_two_processes_hold_identical_replicas(tmp_path: Path):
    config = tiny_teacher_yaml(tmp_path / "t.yaml")
    worker = Path(__file__).with_name("ddp_worker.py")
    launch([str(worker), str(config), str(tmp_path)], tmp_path)
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"replicas differ at {key}"
    b0, b1 = load_file(tmp_path / "batch0.safetensors")["batch"], load_file(tmp_path / "batch1.safetensors")["batch"]
    assert b0.shape == b1.shape == (128, 2) and not torch.equal(b0, b1)  # disjoint shards of 256
    # both processes wrote their RNG state into the checkpoint
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000030"
    assert (ckpt / "rng-rank0.json").exists() and (ckpt / "rng-rank1.json").exists()


def test_distill_run_under_accelerate_launch(tmp_path: Path):
    config = tiny_teacher_yaml(tmp_path / "t.yaml", steps=40)
    launch(["-m", "distill.cli", "run", str(config), "--run-dir", str(tmp_path / "run")], tmp_path)
    assert (tmp_path / "run" / "student" / "model.safetensors").exists()
    assert (tmp_path / "run" / "eval.json").exists()
    final = tmp_path / "run" / "checkpoints" / "step-00000040"
    assert (final / "rng-rank1.json").exists(), "only one process ran"
