"""Where a run's teacher comes from: a finished run, or a recipe trained once and cached.

    teacher: {name: run, path: runs/teacher-8gaussians}
    teacher: {name: recipe, config: teacher-8gaussians.yaml}

A recipe is a teacher-training config; it is trained the first time it is asked for and
cached under $DISTILL_CACHE (default ~/.cache/distill) by the hash of its resolved config,
so demos and tests never retrain the same teacher. Training it leaves the caller's random
streams where they were, so a student's run is the same whether its teacher came from the cache
or was trained first in the same process.
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

from distill.cache import cache_root
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.export import META_FILE, load_denoiser, load_diffusers_denoiser
from distill.diffusion.schedules import ScheduleName
from distill.errors import ConfigError, ModelMismatchError
from distill.kd.export import is_classifier_export, load_classifier
from distill.registry import TEACHERS

TEACHER_METHODS = ("teacher", "supervised")  # methods a recipe may train: denoiser, classifier


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


def load_export(directory: Path) -> tuple[Any, dict[str, Any]]:
    """The frozen model a distill export holds, a classifier or a denoiser, and its metadata."""
    if is_classifier_export(directory):
        return load_classifier(directory)
    return load_denoiser(directory)


def load_configured_teacher(cfg: Any, example_recipe: str) -> tuple[Any, dict[str, Any]]:
    """The frozen teacher of run config `cfg` and its metadata; a ConfigError suggesting
    `teacher: {name: recipe, config: <example_recipe>}` when the config has no teacher."""
    if cfg.teacher is None:
        raise ConfigError(f"method {cfg.method.name!r} distils a teacher: add a teacher section, "
                          f"e.g. teacher: {{name: recipe, config: {example_recipe}}}")
    return cfg.teacher.load()


class TeacherSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    schedule: ScheduleName | None = Field(None, description="the schedule the teacher must have")
    prediction: Literal["velocity", "x0", "eps"] | None = Field(
        None, description="the prediction type the teacher must have")

    def load(self) -> tuple[Denoiser, dict[str, Any]]:
        """The frozen teacher denoiser and its export config, checked against the schedule
        and prediction type this section expects (if it names them)."""
        denoiser, meta = self.load_export()
        for key in ("schedule", "prediction"):
            expected, found = getattr(self, key), meta.get(key)
            if expected is not None and expected != found:
                raise ModelMismatchError(
                    f"teacher.{key}: the config expects {expected!r} but the teacher "
                    f"{self.describe()} was trained with {key} {found!r}; fix teacher.{key} or "
                    "point at the right teacher")
        return denoiser, meta

    def load_export(self) -> tuple[Denoiser, dict[str, Any]]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@TEACHERS.register("run", summary="the exported model of a finished run directory")
class RunTeacher(TeacherSource):
    name: Literal["run"] = "run"
    path: Path

    def describe(self) -> str:
        return str(self.path)

    def load_export(self) -> tuple[Denoiser, dict[str, Any]]:
        if not self.path.exists():
            raise ConfigError(f"teacher.path: {self.path} does not exist; train a teacher first "
                              "(distill run configs/toy2d/teacher-8gaussians.yaml)")
        export = self.path / "student" if (self.path / "student").is_dir() else self.path
        return load_export(export)


@TEACHERS.register("diffusers", summary="a diffusers UNet2DModel/DiT folder (save_pretrained), any schedule",
                   paper="")
class DiffusersTeacher(TeacherSource):
    """A diffusers model you bring, e.g. a pipeline's `unet/` folder. Its schedule and
    prediction type come from `schedule`/`prediction`, else from the scheduler config beside
    it. Timesteps follow diffusers' conventions (1000 t; the DDPM index on vp-discrete)."""

    name: Literal["diffusers"] = "diffusers"
    path: Path
    num_classes: int | None = Field(None, gt=0, description=(
        "classes of a conditional model (default: its class embeddings minus the null class)"))

    def describe(self) -> str:
        return str(self.path)

    def load_export(self) -> tuple[Denoiser, dict[str, Any]]:
        if (self.path / "distill.json").is_file():  # one of our own exports
            return load_denoiser(self.path)
        return load_diffusers_denoiser(self.path, self.schedule, self.prediction, self.num_classes)


@TEACHERS.register("recipe", summary="train a teacher config once, cached by its config hash")
class RecipeTeacher(TeacherSource):
    name: Literal["recipe"] = "recipe"
    config: Path = Field(description="a teacher-training config (method.name: teacher)")
    overrides: list[str] = Field(default_factory=list)

    def run_dir(self) -> Path:
        """The cache directory this recipe trains into: named by its config hash."""
        from distill.config import config_hash, load_config

        cfg = load_config(self.config, self.overrides)
        return cache_root() / "teachers" / f"{cfg.name}-{config_hash(cfg)}"

    def describe(self) -> str:
        return f"recipe {self.config}"

    def load_export(self) -> tuple[Denoiser, dict[str, Any]]:
        from distill.config import load_config
        from distill.runner import run

        path = self.config
        cfg = load_config(path, self.overrides)
        if cfg.method.name not in TEACHER_METHODS:
            raise ConfigError(f"teacher.config: {path} trains method {cfg.method.name!r}, not a "
                              "teacher (method.name: teacher for denoisers, supervised for classifiers)")
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
