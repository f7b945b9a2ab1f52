"""Classifier KD machinery: MNIST-1D and features data, classifier backbones, label handling,
end-to-end runs on a features file, and the bad inputs of issue 6 (class-count mismatch,
temperature <= 0, labels outside the class range, a features file with mismatched rows)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distill.cli import app
from distill.config import validate_config
from distill.data.base import ArrayData
from distill.data.features_file import FeaturesFileConfig
from distill.data.mnist1d import Mnist1DConfig
from distill.errors import ConfigError, DataError, ModelMismatchError
from distill.kd.methods.logits import kept_labels, labelled_cross_entropy
from distill.kd.task import check_classification_data
from distill.models.classifiers import (
    CNN1DConfig,
    CNN2DConfig,
    MLPClassifierConfig,
    parameter_count,
)
from distill.runner import run

TRAIN = {"steps": 30, "batch_size": 64, "lr": 1.0e-2, "checkpoint_every": 30, "progress": False}


def blobs_npz(path: Path, classes: int = 3, rows: int = 240, dim: int = 6, seed: int = 0, **extra) -> Path:
    """Gaussian blobs, one per class, as a features file (x float32 (rows, dim), y int64)."""
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % classes
    centres = rng.normal(size=(classes, dim)) * 3
    x = (centres[y] + rng.normal(size=(rows, dim))).astype(np.float32)
    np.savez(path, **{"x": x, "y": y, **extra})
    return path


def classify_config(name: str, data_path: Path, method: dict, teacher: dict | None = None,
                    hidden: list[int] | None = None):
    raw = {"name": name, "data": {"name": "features", "path": str(data_path)},
           "student": {"name": "mlp-classifier", "hidden": hidden or [16]},
           "method": method, "train": TRAIN, "eval": {"timing_repeats": 1}}
    if teacher is not None:
        raw["teacher"] = teacher
    return validate_config(raw)


# --------------------------------------------------------------------------- data


def test_mnist1d_standard_split_and_transfer_set_leave_global_rng_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    data = Mnist1DConfig(unlabelled=300).build()
    assert np.array_equal(np.random.get_state()[1], before)
    assert data.shape == (1, 40) and data.num_classes == 10
    assert (len(data.train), len(data.test), len(data.unlabelled)) == (4000, 1000, 300)
    assert set(data.train_labels.tolist()) == set(range(10))
    # the transfer set is new inputs, not copies of the labelled ones
    nearest = torch.cdist(data.unlabelled[:50, 0], data.train[:, 0]).min(1).values
    assert nearest.min() > 1e-3
    again = Mnist1DConfig(unlabelled=300).build()
    assert torch.equal(again.train, data.train) and torch.equal(again.unlabelled, data.unlabelled)


def test_features_file_splits_and_keeps_transfer_set(tmp_path: Path):
    path = blobs_npz(tmp_path / "f.npz", x_unlabelled=np.zeros((7, 6), np.float32))
    data = FeaturesFileConfig(path=path, test_fraction=0.25).build()
    assert (len(data.train), len(data.test), len(data.unlabelled)) == (180, 60, 7)
    assert data.num_classes == 3 and data.shape == (6,)


@pytest.mark.parametrize("arrays, words", [
    ({"x": np.zeros((10, 4), np.float32), "y": np.zeros(9, np.int64)}, ["9 labels", "10 rows", "'x'"]),
    ({"x": np.zeros((10, 4), np.float32)}, ["no array 'y'"]),
    ({"x": np.zeros((10, 4), np.float32), "y": np.zeros(10, np.int64),
      "x_test": np.zeros((3, 4), np.float32)}, ["only one of 'x_test' and 'y_test'"]),
    ({"x": np.zeros((10, 4), np.float32), "y": np.zeros(10, np.int64),
      "x_test": np.zeros((3, 5), np.float32), "y_test": np.zeros(3, np.int64)}, ["'x_test'", "(5,)", "(4,)"]),
    ({"x": np.full((10, 4), np.nan, np.float32), "y": np.zeros(10, np.int64)}, ["NaN"]),
    ({"x": np.zeros((10, 4), np.float32), "y": -np.ones(10, np.int64)}, ["negative labels"]),
])
def test_features_file_problems_name_file_and_array(tmp_path: Path, arrays: dict, words: list[str]):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as info:
        FeaturesFileConfig(path=path).build()
    assert str(path) in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_features_file_that_is_not_an_npz(tmp_path: Path):
    path = tmp_path / "f.npz"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match="not an .npz"):
        FeaturesFileConfig(path=path).build()


def test_labels_outside_class_range_are_refused(tmp_path: Path):
    with pytest.raises(DataError, match="labels go up to 2 but num_classes is 2"):
        FeaturesFileConfig(path=blobs_npz(tmp_path / "f.npz"), num_classes=2).build()
    data = ArrayData("d", torch.zeros(4, 2), torch.zeros(2, 2), train_labels=torch.tensor([0, 1, 5, 1]),
                     test_labels=torch.tensor([0, 1]), num_classes=3)
    cfg = classify_config("x", tmp_path / "f.npz", {"name": "supervised"})
    with pytest.raises(DataError, match=r"1 train labels lie outside 0\.\.2 \(e\.g\. 5\)"):
        check_classification_data(cfg, data)


# --------------------------------------------------------------------------- models and labels


def test_classifier_backbones_shapes_and_sizes():
    x1, x2 = torch.randn(5, 1, 40), torch.randn(5, 1, 8, 8)
    teacher, student = CNN1DConfig(channels=64).build((1, 40), 10), CNN1DConfig(channels=8).build((1, 40), 10)
    assert teacher(x1).shape == student(x1).shape == (5, 10)
    assert parameter_count(student) * 10 <= parameter_count(teacher)
    assert CNN2DConfig(channels=8).build((1, 8, 8), 10)(x2).shape == (5, 10)
    assert MLPClassifierConfig(hidden=[7]).build((1, 8, 8), 4)(x2).shape == (5, 4)
    with pytest.raises(ConfigError, match=r"shape \(1, 8, 8\)"):
        CNN1DConfig().make_classifier((1, 8, 8), 10)
    with pytest.raises(ConfigError, match=r"shape \(40,\)"):
        CNN2DConfig().make_classifier((40,), 10)


def test_kept_labels_are_stratified_and_seeded():
    labels = torch.arange(1000) % 10
    kept = kept_labels(labels, 0.1, seed=3)
    assert ((kept != -100).sum()) == 100
    assert torch.equal(torch.bincount(kept[kept != -100], minlength=10), torch.full((10,), 10))
    assert torch.equal(kept, kept_labels(labels, 0.1, seed=3))
    assert not torch.equal(kept, kept_labels(labels, 0.1, seed=4))


def test_cross_entropy_of_a_batch_without_labels_is_zero_not_nan():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = labelled_cross_entropy(logits, torch.full((4,), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("method", [{"name": "kd", "temperature": 0}, {"name": "kd", "temperature": -1.0},
                                    {"name": "dkd", "temperature": 0}])
def test_non_positive_temperature_is_a_config_error(tmp_path: Path, method: dict):
    with pytest.raises(ConfigError, match="temperature"):
        classify_config("x", tmp_path / "f.npz", method, teacher={"name": "run", "path": "runs/t"})


# --------------------------------------------------------------------------- runs


def test_kd_run_end_to_end_and_teacher_class_mismatch(tmp_path: Path):
    data3 = blobs_npz(tmp_path / "three.npz", classes=3)
    teacher_cfg = classify_config("t", data3, {"name": "supervised"}, hidden=[32])
    teacher = run(teacher_cfg, tmp_path / "teacher")
    assert teacher.rows[0]["model"] == "teacher" and teacher.rows[0]["accuracy"] > 0.9

    for method in ({"name": "kd", "temperature": 2.0}, {"name": "dkd"}):
        cfg = classify_config("s", data3, method, teacher={"name": "run", "path": str(tmp_path / "teacher")})
        result = run(cfg, tmp_path / method["name"])
        evaluated = json.loads((result.run_dir / "eval.json").read_text())
        assert evaluated["family"] == "classify"
        student = {r["model"]: r for r in result.rows}["student"]
        assert 0 <= student["agreement"] <= 1 and student["kl_to_teacher"] >= 0
        assert (result.run_dir / "student" / "model.safetensors").is_file() and result.report.is_file()
    # `distill eval` / `distill report` find the classify task from the export and eval.json
    (result.run_dir / "eval.json").unlink()
    assert CliRunner().invoke(app, ["eval", str(result.run_dir)]).exit_code == 0
    untimed = [{k: v for k, v in r.items() if k != "ms_per_sample"} for r in evaluated["rows"]]
    again = json.loads((result.run_dir / "eval.json").read_text())["rows"]
    assert [{k: v for k, v in r.items() if k != "ms_per_sample"} for r in again] == untimed
    result.report.unlink()
    assert CliRunner().invoke(app, ["report", str(result.run_dir)]).exit_code == 0
    assert "agrees with the teacher" in result.report.read_text()

    data4 = blobs_npz(tmp_path / "four.npz", classes=4)
    cfg = classify_config("s", data4, {"name": "kd"}, teacher={"name": "run", "path": str(tmp_path / "teacher")})
    with pytest.raises(ModelMismatchError, match="teacher predicts 3 classes but data 'features' has 4"):
        run(cfg, tmp_path / "mismatch")
    assert not (tmp_path / "mismatch" / "student").exists()


def test_diffusion_method_refuses_a_classifier_student(tmp_path: Path):
    cfg = validate_config({"name": "x", "data": {"name": "8gaussians"}, "student": {"name": "mlp-classifier"},
                           "method": {"name": "teacher"}, "train": TRAIN})
    with pytest.raises(ConfigError, match="denoiser backbone"):
        run(cfg, tmp_path / "run")
