"""A run killed with SIGKILL mid-training resumes to bit-identical final weights; a run
directory made by another config is not resumed unless forced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import tiny_teacher_yaml
from distill.config import load_config
from distill.errors import CheckpointError
from distill.runner import run

TRAIN = ["train.steps=800", "train.checkpoint_every=100", "train.ema_decay=0.99",
         "train.lr_schedule=cosine", "train.warmup_steps=20", "eval.timing_repeats=0"]


def distill_cmd(config: Path, run_dir: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "distill.cli", "run", str(config), *overrides,
            "--run-dir", str(run_dir), "--no-evaluate"]  # the export is what is compared


def progressive_yaml(tmp_path: Path, teacher_dir: Path) -> Path:
    path = tmp_path / "progressive.yaml"
    path.write_text(
        "name: tiny-progressive\n"
        "data: {name: 8gaussians, n: 4096, n_test: 2048}\n"
        f"teacher: {{name: run, path: {teacher_dir}}}\n"
        "student: {name: mlp, hidden: 64, depth: 2, init: teacher}\n"
        "method: {name: progressive, start_steps: 8, end_steps: 2}\n"
        "train: {batch_size: 256, lr: 1.0e-4, progress: false}\n"
        "eval: {nfe: [2], n_samples: 500, timing_repeats: 1}\n"
    )
    return path


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    run_dir = root / "run"
    run(load_config(tiny_teacher_yaml(root / "teacher.yaml")), run_dir, evaluate=False)
    return run_dir


# the teacher case (same checkpoint machinery, no teacher to reload) runs under `make test-all`
@pytest.mark.parametrize("method", [pytest.param("teacher", marks=pytest.mark.slow), "progressive"])
def test_sigkill_then_resume_is_bit_exact(method, tmp_path: Path, tiny_teacher: Path):
    config = (tiny_teacher_yaml(tmp_path / "t.yaml") if method == "teacher"
              else progressive_yaml(tmp_path, tiny_teacher))
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")  # one core, like the xdist worker
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    subprocess.run(distill_cmd(config, straight, TRAIN), check=True, env=env, capture_output=True)
    assert (straight / "student").is_dir() and not (straight / "eval.json").exists()  # --no-evaluate

    proc = subprocess.Popen(distill_cmd(config, resumed, TRAIN), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = resumed / "checkpoints" / "step-00000300"
    deadline = time.time() + 120
    while not target.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists(), "the run never reached its checkpoint at step 300"
    assert not (resumed / "checkpoints" / "step-00000800").exists(), "killed too late to test resume"
    assert not (resumed / "student").exists()

    out = subprocess.run(distill_cmd(config, resumed, TRAIN), check=True, env=env,
                         capture_output=True, text=True)
    assert "resumed from" in out.stdout + out.stderr
    a = load_file(straight / "student" / "model.safetensors")
    b = load_file(resumed / "student" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), f"{key} differs after resume"
    # the metrics log reads as one run: no step logged twice
    steps = [int(line.split('"step": ')[1].split(",")[0])
             for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_run_dir_of_another_config_is_not_resumed(tmp_path: Path):
    config = tiny_teacher_yaml(tmp_path / "t.yaml", steps=20)
    run(load_config(config), tmp_path / "run", evaluate=False)
    with pytest.raises(CheckpointError) as info:
        run(load_config(config, ["train.lr=0.5"]), tmp_path / "run", evaluate=False)
    assert "train.lr: 0.002 -> 0.5" in str(info.value) and "--force" in str(info.value)
    # resume-safe keys (more steps, eval settings) do resume
    run(load_config(config, ["train.steps=30", "eval.n_samples=100"]), tmp_path / "run", evaluate=False)
    # forced: resumes with the new config
    run(load_config(config, ["train.steps=40", "train.lr=0.5"]), tmp_path / "run", force=True,
        evaluate=False)
    assert "lr: 0.5" in (tmp_path / "run" / "config.yaml").read_text()
