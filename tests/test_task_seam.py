"""The task seam: every method runs under a registered task, exports are recognised by their
format, and a new family plugs in with no change to the runner, CLI or config."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from distill.errors import CheckpointError
from distill.registry import METHODS, TASKS
from distill.task import task_of_eval, task_of_export, task_of_method


def test_every_method_runs_under_a_registered_task_and_formats_are_unique():
    families = {entry.name: entry.obj.family for entry in METHODS}
    assert {"diffusion", "classify", "lm"} <= set(TASKS.names())
    assert not [name for name, family in families.items() if family not in TASKS], families
    formats = [f for entry in TASKS for f in entry.obj.formats]
    assert len(formats) == len(set(formats)) and all(formats)
    assert task_of_method("dmd2").name == "diffusion" and task_of_method("kd").name == "classify"
    assert task_of_method("lm-kd").name == "lm"


@pytest.mark.parametrize(("fmt", "task"), [("distill.denoiser/v2", "diffusion"), ("distill.denoiser/v1", "diffusion"),
                                           ("distill.classifier/v1", "classify"), ("distill.causal-lm/v1", "lm")])
def test_an_export_is_recognised_by_its_format(tmp_path, fmt, task):
    (tmp_path / "distill.json").write_text(json.dumps({"format": fmt}))
    assert task_of_export(tmp_path).name == task


def test_an_unknown_or_missing_export_is_refused_naming_the_file(tmp_path):
    (tmp_path / "distill.json").write_text(json.dumps({"format": "someone-else/v9"}))
    with pytest.raises(CheckpointError, match=r"distill\.json has format 'someone-else/v9'.*known formats"):
        task_of_export(tmp_path)
    with pytest.raises(CheckpointError, match="holds no exported model"):
        task_of_export(tmp_path / "nothing")


def test_an_eval_json_names_its_task():
    assert task_of_eval({"family": "lm", "rows": []}).name == "lm"
    assert task_of_eval({"rows": []}).name == "diffusion"  # written before eval.json named its family
    assert task_of_eval({}, {"method": {"name": "kd"}}).name == "classify"  # not evaluated yet
    assert task_of_eval({"family": "nobody", "rows": []}) is None


PLUGIN = '''
"""A family of one method, in one file: its student is a vector fitted to the data's second moment."""
import json
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save_file
from torch import nn

from distill.export_dir import META_FILE, staged_directory, write_text_atomic
from distill.method import Method, MethodConfig, ParamGroup
from distill.registry import METHODS, MODELS, TASKS
from distill.report.html import write_report
from distill.report.sections import table_section
from distill.task import Built, Task


class Vector(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.v = nn.Parameter(torch.zeros(dim))


@MODELS.register("vector", summary="a learned vector")
class VectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["vector"] = "vector"


class FitMeanConfig(MethodConfig):
    name: Literal["fit-mean"] = "fit-mean"


@METHODS.register("fit-mean", summary="regress a vector onto the squared data")
class FitMean(Method):
    Config = FitMeanConfig
    family: ClassVar[str] = "mean"
    needs_teacher = False

    def __init__(self, student):
        super().__init__()
        self.student = student

    def param_groups(self):
        return [ParamGroup("student", self.student.parameters())]

    def forward(self, batch, group, step):
        return {"mse": ((batch["x"] ** 2 - self.student.v) ** 2).mean()}


@TASKS.register("mean", summary="fit the data's second moment")
class MeanTask(Task):
    name = "mean"
    formats = ("test.mean/v1",)
    has_samples = False

    def build(self, cfg, run_dir):
        data = cfg.data.build()
        return Built(data, None, None, FitMean(Vector(data.shape[0])))

    def export(self, run_dir, cfg, built, student):
        with staged_directory(run_dir / "student") as staging:
            save_file({"v": student.v.detach().contiguous()}, staging / "v.safetensors")
            (staging / META_FILE).write_text(json.dumps({"format": "test.mean/v1"}))

    def load_export(self, directory):
        model = Vector(2)
        model.load_state_dict(load_file(Path(directory) / "v.safetensors"))
        return model, {"format": "test.mean/v1"}

    def evaluate(self, run_dir, cfg):
        model, _ = self.load_export(run_dir / "student")
        mean = (cfg.data.build().test ** 2).mean(0)
        rows = [{"model": "zero vector", "error": float((mean ** 2).sum())},
                {"model": "student", "error": float(((mean - model.v) ** 2).sum())}]
        write_text_atomic(run_dir / "eval.json", json.dumps({"family": "mean", "rows": rows}))
        write_report(run_dir)
        return rows

    def table(self, eval_data):
        return [["model", "error"]] + [[r["model"], f"{r['error']:.5f}"] for r in eval_data["rows"]]

    def report_sections(self, eval_data, run_dir):
        return table_section(self.table(eval_data), ["the mean family's summary"], "mean family")
'''

SCRIPT = '''
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import mean_family  # noqa: F401  (its registration)
from distill.config import validate_config
from distill.report import format_table
from distill.runner import evaluate_run, run

cfg = validate_config({"name": "mean", "data": {"name": "moons", "n": 2048, "n_test": 512},
                       "student": {"name": "vector"}, "method": {"name": "fit-mean"},
                       "train": {"steps": 200, "batch_size": 256, "lr": 0.05, "progress": False}})
run_dir = Path(sys.argv[2])
rows = run(cfg, run_dir).rows
again = evaluate_run(run_dir)
print(json.dumps({"rows": rows, "again": again, "table": format_table(json.loads((run_dir / "eval.json").read_text()))}))
'''


def test_a_new_family_plugs_in_without_touching_the_runner(tmp_path):
    """A task, method and student registered from outside the package train, export,
    re-evaluate (`distill eval`'s path) and report through the seam."""
    (tmp_path / "mean_family.py").write_text(textwrap.dedent(PLUGIN))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(tmp_path / "run")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    untrained, student = (row["error"] for row in out["rows"])
    assert student < untrained / 10 and out["again"] == out["rows"]
    assert out["table"][0] == ["model", "error"]
    report = (tmp_path / "run" / "report.html").read_text()
    assert "the mean family&#x27;s summary" in report and "<h2>Samples</h2>" not in report
    assert json.loads((tmp_path / "run" / "student" / "distill.json").read_text())["format"] == "test.mean/v1"
