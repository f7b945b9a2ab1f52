"""The task seam: what differs between families of distillation.

A run's life is the same for every family (config -> data -> teacher -> student -> method ->
trainer -> evaluation -> report -> export); `distill.runner` owns the shared part. A `Task`,
registered once per family, owns the rest:

    @TASKS.register("classify", summary="classifier knowledge distillation")
    class ClassifyTask(Task):
        formats = ("distill.classifier/v1",)       # what its exports write as distill.json format
        def build(self, cfg, run_dir): ...          # data, teacher (checked), student, method
        def export(self, run_dir, cfg, built, student): ...   # run_dir/student/
        def load_export(self, directory): ...       # (frozen model, metadata)
        def evaluate(self, run_dir, cfg): ...       # eval.json + report.html, returns the rows
        def table(self, eval_data): ...             # the comparison table as strings
        def report_sections(self, eval_data, run_dir): ...    # its part of report.html

`Method.family` names the task that builds, exports and evaluates a method's runs; a run
directory's task is found from its `student/distill.json` format (`task_of_export`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from torch import nn

from distill.errors import CheckpointError, ConfigError
from distill.export_dir import META_FILE, read_meta_json
from distill.method import Method
from distill.registry import METHODS, TASKS


class Built(NamedTuple):
    """What a task builds for a validated config: the data, the frozen teacher (None for
    methods without one) with its export metadata, and the method holding the student."""

    data: Any
    teacher: nn.Module | None
    teacher_meta: dict[str, Any] | None
    method: Method


class Task:
    """One family's part of the run lifecycle (see the module docstring)."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]] = ()  # the distill.json formats this task exports and reads
    example_teacher: ClassVar[str] = ""  # a teacher recipe suggested when a config has none
    has_samples: ClassVar[bool] = True  # report.html shows the run's samples.safetensors

    def check(self, cfg: Any) -> None:
        """Cheap checks of a validated config before anything loads (raise ConfigError)."""
        if cfg.eval.assisted is not None:
            raise ConfigError(f"eval.assisted measures a language-model draft; method "
                              f"{cfg.method.name!r} ({self.name}) does not train one. Remove eval.assisted")

    def build(self, cfg: Any, run_dir: Path) -> Built:
        raise NotImplementedError

    def export(self, run_dir: Path, cfg: Any, built: Built, student: nn.Module) -> None:
        """Write the trained `student` to run_dir/student (atomically)."""
        raise NotImplementedError

    def load_export(self, directory: Path) -> tuple[nn.Module, dict[str, Any]]:
        """The frozen model of an export folder this task wrote, and its metadata."""
        raise NotImplementedError

    def evaluate(self, run_dir: Path, cfg: Any) -> list[dict[str, Any]]:
        """Evaluate the exported student beside its baseline(s): write eval.json (with
        "family": this task's name) and report.html; return the rows."""
        raise NotImplementedError

    def table(self, eval_data: dict[str, Any]) -> list[list[str]]:
        """The comparison table of an eval.json as strings: a header row, then one per row."""
        raise NotImplementedError

    def report_sections(self, eval_data: dict[str, Any], run_dir: Path) -> tuple[str, str]:
        """(summary HTML, evaluation HTML) of this family's part of report.html."""
        raise NotImplementedError


def task_named(name: str) -> Task:
    """The registered task `name` (an instance)."""
    return TASKS.get(name)()


def task_of_method(method: str) -> Task:
    """The task that runs method `method` (its `family`)."""
    return task_named(METHODS.get(method).family)


def task_of_export(directory: Path) -> Task:
    """The task whose export `directory` is, from its distill.json format."""
    path = Path(directory) / META_FILE
    found = read_meta_json(path).get("format")
    for entry in TASKS:
        if found in entry.obj.formats:
            return entry.obj()
    known = ", ".join(f for entry in TASKS for f in entry.obj.formats)
    raise CheckpointError(f"{path} has format {found!r}, which no task reads (known formats: "
                          f"{known}); point at a distill export, or re-export it with this version")


def load_export(directory: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen model of any distill export folder (a denoiser, a classifier, an LM...) and
    its metadata."""
    return task_of_export(directory).load_export(Path(directory))


LEGACY_FAMILY = "diffusion"  # eval.json files written before they recorded their "family"


def task_of_eval(eval_data: dict[str, Any], config: dict[str, Any] | None = None) -> Task | None:
    """The task that wrote an eval.json: its "family"; for an empty one (not evaluated yet),
    the family of the run config's method; None when nothing names a registered task."""
    if eval_data:
        family = eval_data.get("family", LEGACY_FAMILY)
        return task_named(family) if family in TASKS else None
    method = (config or {}).get("method")
    name = method.get("name") if isinstance(method, dict) else None
    if isinstance(name, str) and name in METHODS:
        return task_of_method(name)
    return None
