"""The command line: every command has --help; bad input exits with a one-line reason
(naming the key or file and how to fix it), never a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import CONFIGS, tiny_teacher_yaml
from distill.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", ["run", "eval", "report", "list", "demo"])
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_list_shows_methods_datasets_and_papers():
    result = runner.invoke(app, ["list"], terminal_width=200)
    assert result.exit_code == 0
    for name in ("ode-pairs", "progressive", "teacher", "8gaussians", "checkerboard", "file", "mlp"):
        assert name in result.output
    assert "Salimans" in result.output


def invoke_run(*args: str) -> str:
    result = runner.invoke(app, ["run", *args], terminal_width=200)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def test_unknown_method_lists_registered():
    out = invoke_run(str(CONFIGS / "ode-pairs-8gaussians.yaml"), "method.name=odepairs")
    assert "unknown method 'odepairs'" in out and "Did you mean 'ode-pairs'" in out


def test_zero_steps_is_refused_before_training():
    out = invoke_run(str(CONFIGS / "ode-pairs-8gaussians.yaml"), "train.steps=0")
    assert "train.steps" in out and "greater than 0" in out


def test_batch_larger_than_dataset(tmp_path: Path):
    config = tiny_teacher_yaml(tmp_path / "t.yaml")
    out = invoke_run(str(config), "data.n=100", "--run-dir", str(tmp_path / "r"))
    assert "train.batch_size=256" in out and "100" in out
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_data_file_with_wrong_columns_for_the_teacher(tmp_path: Path):
    teacher_config = tiny_teacher_yaml(tmp_path / "t.yaml", steps=10)
    assert runner.invoke(app, ["run", str(teacher_config), "--run-dir", str(tmp_path / "teacher")]).exit_code == 0
    points = tmp_path / "points3d.npy"
    np.save(points, np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32))
    out = invoke_run(str(CONFIGS / "ode-pairs-8gaussians.yaml"), "data={name: file, path: " + str(points) + "}",
                     "teacher={name: run, path: " + str(tmp_path / "teacher") + "}",
                     "--run-dir", str(tmp_path / "student"))
    assert "2-dimensional" in out and "3 columns" in out


def test_missing_teacher_run_is_explained(tmp_path: Path):
    out = invoke_run(str(CONFIGS / "ode-pairs-8gaussians.yaml"),
                     f"teacher={{name: run, path: {tmp_path / 'nothing'}}}")
    assert "teacher.path" in out and "does not exist" in out


def test_corrupt_teacher_export_is_explained(tmp_path: Path):
    teacher_config = tiny_teacher_yaml(tmp_path / "t.yaml", steps=10)
    runner.invoke(app, ["run", str(teacher_config), "--run-dir", str(tmp_path / "teacher")])
    weights = tmp_path / "teacher" / "student" / "model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    out = invoke_run(str(CONFIGS / "ode-pairs-8gaussians.yaml"),
                     f"teacher={{name: run, path: {tmp_path / 'teacher'}}}")
    assert "model.safetensors" in out and "corrupt" in out


def test_eval_of_a_non_run_directory(tmp_path: Path):
    result = runner.invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output
