"""A teacher recipe trained on a cache miss must not change the student's run: the student
trained right after its teacher equals one whose teacher came from the cache."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import tiny_teacher_yaml
from distill.config import load_config
from distill.runner import run


def student_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted((run_dir / "student").glob("*.safetensors"))
    assert files, f"no exported weights in {run_dir / 'student'}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


def test_a_student_is_the_same_whether_its_teacher_was_cached_or_trained_first(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))  # an empty cache: a miss first
    tiny_teacher_yaml(tmp_path / "teacher.yaml", steps=30)
    (tmp_path / "student.yaml").write_text(
        "name: tiny-dmd2\n"
        "data: {name: 8gaussians, n: 4096, n_test: 2048}\n"
        "teacher: {name: recipe, config: teacher.yaml}\n"
        "student: {name: mlp, hidden: 64, depth: 2, init: teacher}\n"
        "method: {name: dmd2, fake_updates: 2}\n"
        "train: {steps: 6, batch_size: 64, progress: false}\n")
    cfg = load_config(tmp_path / "student.yaml")
    run(cfg, tmp_path / "trained-first", evaluate=False)  # trains the teacher, then the student
    assert list((tmp_path / "cache" / "teachers").glob("tiny-teacher-*/student"))
    run(cfg, tmp_path / "from-cache", evaluate=False)
    first, cached = student_weights(tmp_path / "trained-first"), student_weights(tmp_path / "from-cache")
    assert first.keys() == cached.keys()
    for key in first:
        torch.testing.assert_close(first[key], cached[key], rtol=0, atol=0, msg=key)

