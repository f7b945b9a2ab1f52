"""Teacher sources every family reads: a finished run, or a recipe trained once and cached.

    teacher: {name: run, path: runs/teacher-8gaussians}
    teacher: {name: recipe, config: teacher-8gaussians.yaml}

A run's export is loaded by the task that wrote it (`distill.task.load_export`), so the same
two sources give a denoiser, a classifier or any later family's model. A recipe is a
teacher-training config; it is trained the first time it is asked for and cached under
$DISTILL_CACHE (default ~/.cache/distill) by the hash of its resolved config, so demos and
tests never retrain the same teacher. Training it leaves the caller's random streams where
they were, so a student's run is the same whether its teacher came from the cache or was
trained first in the same process. Family-specific sources (a diffusers folder, a causal LM)
live with their family.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from distill.cache import cache_root
from distill.errors import ConfigError, ModelMismatchError
from distill.export_dir import META_FILE
from distill.registry import METHODS, TEACHERS
from distill.task import load_export


@contextmanager
def random_state_kept() -> Iterator[None]:
    """Run a block (e.g. training a teacher, which reseeds) without moving the caller's python,
    numpy and torch (CPU and CUDA) random streams."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def load_configured_teacher(cfg: Any, example_recipe: str) -> tuple[Any, dict[str, Any]]:
    """The frozen teacher of run config `cfg` and its metadata; a ConfigError suggesting
    `teacher: {name: recipe, config: <example_recipe>}` when the config has no teacher."""
    if cfg.teacher is None:
        example = f", e.g. teacher: {{name: recipe, config: {example_recipe}}}" if example_recipe else ""
        raise ConfigError(f"method {cfg.method.name!r} distils a teacher: add a teacher section{example}")
    return cfg.teacher.load()


class TeacherSource(BaseModel):
    """Base of the sources that load an exported model. `schedule` and `prediction` are
    expectations a diffusion config may state about its teacher; a teacher whose metadata
    disagrees is refused."""

    model_config = ConfigDict(extra="forbid")
    name: str
    schedule: str | None = Field(None, description="diffusion: the noise schedule the teacher must have")
    prediction: str | None = Field(None, description="diffusion: the prediction type the teacher must have")

    def load(self) -> tuple[nn.Module, dict[str, Any]]:
        """The frozen teacher and its export metadata, checked against the schedule and
        prediction type this section expects (if it names them)."""
        model, meta = self.load_export()
        for key in ("schedule", "prediction"):
            expected, found = getattr(self, key), meta.get(key)
            if expected is not None and expected != found:
                raise ModelMismatchError(
                    f"teacher.{key}: the config expects {expected!r} but the teacher "
                    f"{self.describe()} was trained with {key} {found!r}; fix teacher.{key} or "
                    "point at the right teacher")
        return model, meta

    def load_export(self) -> tuple[nn.Module, dict[str, Any]]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@TEACHERS.register("run", summary="the exported model of a finished run directory")
class RunTeacher(TeacherSource):
    name: Literal["run"] = "run"
    path: Path

    def describe(self) -> str:
        return str(self.path)

    def load_export(self) -> tuple[nn.Module, dict[str, Any]]:
        if not self.path.exists():
            raise ConfigError(f"teacher.path: {self.path} does not exist; train a teacher first "
                              "(distill run configs/toy2d/teacher-8gaussians.yaml)")
        export = self.path / "student" if (self.path / "student").is_dir() else self.path
        return load_export(export)


@TEACHERS.register("recipe", summary="train a teacher config once, cached by its config hash")
class RecipeTeacher(TeacherSource):
    name: Literal["recipe"] = "recipe"
    config: Path = Field(description="a teacher-training config (method.name: teacher or supervised)")
    overrides: list[str] = Field(default_factory=list)
    student: bool = Field(False, description=(
        "the recipe distils a student, and its exported student is the model wanted (methods "
        "that fine-tune a distilled student, pso); false: the recipe must train a teacher"))

    def run_dir(self) -> Path:
        """The cache directory this recipe trains into: named by its config hash."""
        from distill.config import config_hash, load_config

        cfg = load_config(self.config, self.overrides)
        return cache_root() / "teachers" / f"{cfg.name}-{config_hash(cfg)}"

    def describe(self) -> str:
        return f"recipe {self.config}"

    def load_export(self) -> tuple[nn.Module, dict[str, Any]]:
        from distill.config import load_config
        from distill.runner import run

        path = self.config
        cfg = load_config(path, self.overrides)
        if not self.student and not METHODS.get(cfg.method.name).trains_teacher:
            teachers = ", ".join(e.name for e in METHODS if e.obj.trains_teacher)
            raise ConfigError(f"teacher.config: {path} trains method {cfg.method.name!r}, not a "
                              f"teacher (a teacher recipe's method.name is one of: {teachers}); "
                              "set teacher.student: true to start from the student it distils")
        run_dir = self.run_dir()
        if not (run_dir / "student" / META_FILE).exists():
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise ConfigError(f"teacher recipe {path} is not trained yet; train it in one "
                                  f"process first: distill run {path} --run-dir {run_dir}")
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(run_dir) + ".lock"):
                if not (run_dir / "student" / META_FILE).exists():
                    print(f"[distill] training teacher {cfg.name} once; cached in {run_dir}")
                    with random_state_kept():
                        run(cfg, run_dir, evaluate=False)
        return load_export(run_dir / "student")


def teacher_source(value: Any, where: str) -> TeacherSource:
    """A registered teacher source from a mapping {name: run|recipe|..., ...} (as in YAML), for
    method options that list several teachers (ensembles)."""
    if isinstance(value, TeacherSource):
        return value
    if not isinstance(value, dict) or value.get("name") not in TEACHERS.names():
        raise ValueError(f"{where} must be a teacher section with name one of {TEACHERS.names()}, "
                         "e.g. {name: recipe, config: teacher-mnist1d.yaml}")
    return TEACHERS.get(value["name"]).model_validate(value)
