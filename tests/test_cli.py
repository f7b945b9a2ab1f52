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
    assert "shape (2,)" in out and "shape (3,)" in out


def test_data_with_other_classes_than_the_teacher(tmp_path: Path):
    """A teacher conditioned on the 8 modes cannot serve data whose labels are 2 groups of them."""
    teacher_config = tiny_teacher_yaml(tmp_path / "t.yaml", steps=10)
    assert runner.invoke(app, ["run", str(teacher_config), "data.labelled=true", "--run-dir",
                               str(tmp_path / "teacher")]).exit_code == 0
    out = invoke_run(str(CONFIGS / "ode-pairs-8gaussians.yaml"), "data.labelled=true",
                     "data.class_groups=[[0,1,2,3],[4,5,6,7]]",
                     "teacher={name: run, path: " + str(tmp_path / "teacher") + "}",
                     "--run-dir", str(tmp_path / "student"))
    assert "has 2 classes" in out and "trained on 8" in out and "class_groups" in out
    assert not (tmp_path / "student" / "checkpoints").exists()


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


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-teacher")
    config = tiny_teacher_yaml(root / "t.yaml", steps=10)
    assert runner.invoke(app, ["run", str(config), "--run-dir", str(root / "run")]).exit_code == 0
    return root / "run"


def progressive_args(teacher_run: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [str(CONFIGS / "progressive-8gaussians.yaml"), f"teacher={{name: run, path: {teacher_run}}}",
            "student={name: mlp, hidden: 64, depth: 2, init: teacher}", "data.n=2048",
            "--run-dir", str(tmp_path / "p"), *extra]


def test_progressive_with_fewer_steps_than_rounds(teacher_run: Path, tmp_path: Path):
    out = invoke_run(*progressive_args(teacher_run, tmp_path, "train.steps=3"))
    assert "train.steps=3" in out and "5 rounds" in out


def test_progressive_steps_must_halve():
    out = invoke_run(str(CONFIGS / "progressive-8gaussians.yaml"), "method.start_steps=48")
    assert "power of 2" in out


def test_accumulation_that_does_not_divide_the_batch(teacher_run: Path, tmp_path: Path):
    out = invoke_run(*progressive_args(teacher_run, tmp_path, "train.grad_accum=3"))
    assert "train.batch_size=512" in out and "divisible" in out


def test_student_init_from_a_different_teacher_architecture(teacher_run: Path, tmp_path: Path):
    args = progressive_args(teacher_run, tmp_path)
    args[2] = "student={name: mlp, hidden: 32, depth: 2, init: teacher}"
    out = invoke_run(*args)
    assert "student.init=teacher" in out and "student.hidden=32 vs teacher 64" in out


def test_guidance_on_an_unconditional_teacher(teacher_run: Path, tmp_path: Path):
    out = invoke_run(*progressive_args(teacher_run, tmp_path, "method.guidance=3"))
    assert "method.guidance=3" in out and "unconditional" in out


def test_teacher_schedule_disagreeing_with_the_config(teacher_run: Path, tmp_path: Path):
    args = progressive_args(teacher_run, tmp_path)
    args[1] = f"teacher={{name: run, path: {teacher_run}, schedule: vp-cosine}}"
    out = invoke_run(*args)
    assert "teacher.schedule" in out and "'vp-cosine'" in out and "'flow'" in out


def test_images_too_small_for_the_unet(tmp_path: Path):
    np.savez(tmp_path / "tiny.npz", x=np.zeros((40, 6, 6), np.uint8), y=np.arange(40) % 4)
    config = tmp_path / "t.yaml"
    config.write_text(f"name: t\ndata: {{name: file, path: {tmp_path / 'tiny.npz'}}}\n"
                      "student: {name: unet, channels: [8, 16, 32], norm_groups: 8}\n"
                      "method: {name: teacher}\ntrain: {steps: 2, batch_size: 8}\n")
    out = invoke_run(str(config), "--run-dir", str(tmp_path / "run"))
    assert "multiples of 4" in out and "6x6" in out


def test_a_teacher_of_another_family_is_refused_naming_both(teacher_run: Path, tmp_path: Path):
    """A denoiser run as a classifier's teacher, and a classifier run as a denoiser's teacher."""
    classifier = ["data={name: 8gaussians, labelled: true, n: 1024, n_test: 256}",
                  "student={name: mlp-classifier, hidden: [16]}", "train={steps: 2, batch_size: 64, progress: false}",
                  "eval={timing_repeats: 0}"]
    out = runner.invoke(app, ["run", str(CONFIGS / "ode-pairs-8gaussians.yaml"), *classifier, "method={name: kd}",
                              f"teacher={{name: run, path: {teacher_run}}}", "--run-dir", str(tmp_path / "kd")])
    assert out.exit_code == 2 and "'distill.denoiser/v2' export, not a classifier" in out.output
    config = tmp_path / "classifier.yaml"
    config.write_text("name: c\nmethod: {name: supervised}\n" + "".join(
        f"{o.split('=', 1)[0]}: {o.split('=', 1)[1]}\n" for o in classifier))
    assert runner.invoke(app, ["run", str(config), "--run-dir", str(tmp_path / "c")]).exit_code == 0
    out = runner.invoke(app, ["run", str(CONFIGS / "ode-pairs-8gaussians.yaml"), "data.n=2048",
                              f"teacher={{name: run, path: {tmp_path / 'c'}}}", "--run-dir", str(tmp_path / "o")])
    assert out.exit_code == 2 and "'distill.classifier/v1' export, not a denoiser" in out.output
