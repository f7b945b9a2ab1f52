"""The classify task: knowledge distillation of classifiers. Builds the student/teacher
classifiers and the method, exports the trained student, and evaluates it beside its teacher
on the held-out split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from distill.data.base import ArrayData
from distill.errors import ConfigError, DataError, ModelMismatchError
from distill.export_dir import write_text_atomic
from distill.kd.export import FORMAT, load_classifier, save_classifier
from distill.kd.report import classifier_sections, classifier_table
from distill.metrics.classify import (
    accuracy,
    agreement,
    expected_calibration_error,
    kl_to_teacher,
    predict,
)
from distill.models.classifiers import ClassifierConfig, parameter_count
from distill.registry import METHODS, TASKS
from distill.report.html import write_report
from distill.task import Built, Task
from distill.teachers import load_configured_teacher
from distill.timing import best_seconds


def check_classification_data(cfg: Any, data: ArrayData) -> None:
    """Labels must exist and lie in [0, num_classes)."""
    name = cfg.data.name
    if data.train_labels is None or data.num_classes is None:
        raise DataError(f"data {name!r} has no labels; classifier distillation needs labelled "
                        "data (an .npz with x and y, digits or mnist1d)")
    for split, labels in (("train", data.train_labels), ("test", data.test_labels)):
        if labels is None:
            raise DataError(f"data {name!r} has no {split} labels")
        bad = (labels < 0) | (labels >= data.num_classes)
        if bad.any():
            raise DataError(f"data {name!r}: {int(bad.sum())} {split} labels lie outside "
                            f"0..{data.num_classes - 1} (e.g. {int(labels[bad][0])}); fix the labels "
                            "or the class count")


def check_teacher_classifier(meta: dict[str, Any], data: ArrayData, data_name: str) -> None:
    """The teacher must take this data's inputs and predict the same classes."""
    if meta.get("format") != FORMAT:
        raise ModelMismatchError(f"the teacher is a {meta.get('format')!r} export, not a classifier; "
                                 "classifier distillation needs a classifier teacher (a run trained "
                                 "with method: supervised)")
    if tuple(meta["shape"]) != data.shape:
        raise ModelMismatchError(f"the teacher takes inputs of shape {tuple(meta['shape'])} but data "
                                 f"{data_name!r} has inputs of shape {data.shape}")
    if meta["num_classes"] != data.num_classes:
        raise ModelMismatchError(
            f"the teacher predicts {meta['num_classes']} classes but data {data_name!r} has "
            f"{data.num_classes}; teacher and student must share the label space (use the "
            "teacher's dataset and data.class_groups)")


def build_classify(cfg: Any) -> Built:
    """Data, frozen teacher (or None) and method instance for a classifier-KD config."""
    method_cls = METHODS.get(cfg.method.name)
    if not isinstance(cfg.student, ClassifierConfig):
        raise ConfigError(f"method {cfg.method.name!r} trains a classifier: student.name must be "
                          "a classifier backbone (mlp-classifier, cnn1d, cnn2d), not "
                          f"{cfg.student.name!r}")
    data = cfg.data.build()
    check_classification_data(cfg, data)
    teacher, meta = None, None
    if method_cls.needs_teacher:
        teacher, meta = load_configured_teacher(cfg, ClassifyTask.example_teacher)
        check_teacher_classifier(meta, data, cfg.data.name)
    student = method_cls.student_config(cfg.method, cfg.student).make_classifier(data.shape, data.num_classes)
    method = method_cls(cfg.method, student=student, teacher=teacher, data=data,
                        seed=cfg.train.seed, total_steps=cfg.train.steps)
    return Built(data, teacher, meta, method)


def export_classify(run_dir: Path, student: nn.Module, cfg: Any, data: ArrayData) -> None:
    role = "teacher" if METHODS.get(cfg.method.name).trains_teacher else "student"
    model_cfg = METHODS.get(cfg.method.name).student_config(cfg.method, cfg.student)
    save_classifier(run_dir / "student", student, model_cfg, data.shape, data.num_classes,
                    role=role, method=cfg.method.name, run=cfg.name)


def ms_per_sample(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Best-of-`repeats` inference time per sample on `x` (after a warm-up), in milliseconds."""
    return 1000 * best_seconds(lambda: predict(model, x), repeats) / len(x)


def classifier_rows(models: dict[str, nn.Module], data: ArrayData, repeats: int = 3) -> list[dict[str, Any]]:
    """One row per model on the held-out split; students also get agreement and KL to the
    teacher when a teacher is among `models`."""
    x, y = data.test, data.test_labels
    logits = {name: predict(m, x) for name, m in models.items()}
    rows = []
    for name, model in models.items():
        row: dict[str, Any] = {"model": name, "parameters": parameter_count(model),
                               "accuracy": accuracy(logits[name], y),
                               "ece": expected_calibration_error(logits[name], y)}
        if name != "teacher" and "teacher" in logits:
            row["agreement"] = agreement(logits[name], logits["teacher"])
            row["kl_to_teacher"] = kl_to_teacher(logits[name], logits["teacher"])
        if repeats:
            row["ms_per_sample"] = ms_per_sample(model, x, repeats)
        rows.append(row)
    return rows


def evaluate_classifier_run(run_dir: Path, cfg: Any) -> list[dict[str, Any]]:
    """Evaluate a KD run's exported student (and its teacher): eval.json and report.html."""
    student, meta = load_classifier(run_dir / "student")
    data = cfg.data.build()
    models = {}
    if meta["role"] == "teacher":
        models["teacher"] = student
    else:
        if cfg.teacher is not None:
            models["teacher"], _ = cfg.teacher.load()
        models["student"] = student
    rows = classifier_rows(models, data, cfg.eval.timing_repeats)
    result = {"run": cfg.name, "method": cfg.method.name, "dataset": cfg.data.name,
              "family": ClassifyTask.name, "primary_metric": "accuracy",
              "metrics": ["accuracy", "agreement", "ece", "kl_to_teacher"],
              "n_samples": len(data.test), "rows": rows}
    write_text_atomic(run_dir / "eval.json", json.dumps(result, indent=2))
    write_report(run_dir)
    return rows


@TASKS.register("classify", summary="knowledge distillation of classifiers")
class ClassifyTask(Task):
    name: ClassVar[str] = "classify"
    formats: ClassVar[tuple[str, ...]] = (FORMAT,)
    example_teacher: ClassVar[str] = "teacher-mnist1d.yaml"
    has_samples: ClassVar[bool] = False

    def build(self, cfg: Any, run_dir: Path) -> Built:
        return build_classify(cfg)

    def export(self, run_dir: Path, cfg: Any, built: Built, student: nn.Module) -> None:
        export_classify(run_dir, student, cfg, built.data)

    def load_export(self, directory: Path) -> tuple[nn.Module, dict[str, Any]]:
        return load_classifier(directory)

    def evaluate(self, run_dir: Path, cfg: Any) -> list[dict[str, Any]]:
        return evaluate_classifier_run(run_dir, cfg)

    def table(self, eval_data: dict[str, Any]) -> list[list[str]]:
        return classifier_table(eval_data)

    def report_sections(self, eval_data: dict[str, Any], run_dir: Path) -> tuple[str, str]:
        return classifier_sections(eval_data)
