"""One run's life: config -> data -> teacher -> student -> method -> trainer -> evaluation
-> report -> export. `run()` is what `distill run` calls; it resumes an existing run dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate.utils import set_seed

from distill.config import (
    RESUME_SAFE_KEYS,
    config_differences,
    config_hash,
    dump_config,
    validate_config,
    without_keys,
)
from distill.errors import CheckpointError, ConfigError
from distill.export_dir import write_text_atomic
from distill.method import Method
from distill.task import Built, task_of_export, task_of_method
from distill.train.batches import batch_size_of, stratum_counts
from distill.train.trainer import Trainer, make_accelerator


@dataclass
class RunResult:
    run_dir: Path
    rows: list[dict[str, Any]]

    @property
    def report(self) -> Path:
        return self.run_dir / "report.html"


def check_run_dir(cfg: Any, run_dir: Path, force: bool) -> None:
    """Refuse to resume a run directory made by a different config (unless forced)."""
    config_path = run_dir / "config.yaml"
    if config_path.exists():
        old = yaml.safe_load(config_path.read_text()) or {}
        new = cfg.model_dump(mode="json")
        diffs = config_differences(without_keys(old, RESUME_SAFE_KEYS), without_keys(new, RESUME_SAFE_KEYS))
        if diffs and not force:
            shown = "\n".join(f"  {d}" for d in diffs[:12])
            raise CheckpointError(
                f"{run_dir} holds a run made by a different config:\n{shown}\nChoose another "
                "--run-dir, or pass --force to resume it with the new config anyway.")
    elif (run_dir / "checkpoints").exists() and not force:
        raise CheckpointError(f"{run_dir} has checkpoints but no config.yaml; pass --force to use it")


def check_batch_strata(method: Method, batch_size: int) -> None:
    """Every stratum of a stratified batch (e.g. the labelled rows) holds its rows per batch."""
    strata = method.batch_strata()
    if strata is None:
        return
    stratum, shares = strata
    counts = stratum_counts(shares, batch_size)
    for k, (count, size) in enumerate(zip(counts, torch.bincount(stratum, minlength=len(counts)).tolist(),
                                          strict=True)):
        if count > size:
            raise ConfigError(
                f"train.batch_size={batch_size} draws {count} rows of batch stratum {k} (share "
                f"{shares[k]:g}) per batch, but the training rows hold only {size} of them; lower "
                "train.batch_size or that share (method.labelled_share for the labelled rows)")


def build(cfg: Any, run_dir: str | Path | None = None) -> Built:
    """Data, frozen teacher (with its metadata) and method instance for a validated config,
    built by the task of its method (`Method.family`)."""
    task = task_of_method(cfg.method.name)
    task.check(cfg)
    return task.build(cfg, Path(run_dir or Path("runs") / cfg.name))


def run(cfg: Any, run_dir: str | Path | None = None, *, force: bool = False,
        evaluate: bool = True) -> RunResult:
    """Train (or resume) the run `cfg` in `run_dir` (default runs/<name>), export the student,
    evaluate it beside its teacher and write the report."""
    run_dir = Path(run_dir or Path("runs") / cfg.name)
    check_run_dir(cfg, run_dir, force)
    task = task_of_method(cfg.method.name)
    task.check(cfg)
    accelerator = make_accelerator(cfg.train)
    set_seed(cfg.train.seed, device_specific=True)
    built = task.build(cfg, run_dir)
    rows = training_rows(cfg, built)
    check_batch_strata(built.method, cfg.train.batch_size)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
    accelerator.wait_for_everyone()
    trainer = Trainer(built.method, cfg.train, run_dir, rows, accelerator, config_hash(cfg, RESUME_SAFE_KEYS))
    trainer.resume()
    if trainer.step < cfg.train.steps:
        trainer.fit()
    else:
        accelerator.print(f"[distill] {run_dir} already trained to step {trainer.step}")
    result = RunResult(run_dir, [])
    if accelerator.is_main_process:
        task.export(run_dir, cfg, built, trainer.student())
        if evaluate:
            result.rows = task.evaluate(run_dir, cfg)
    accelerator.wait_for_everyone()
    return result


def training_rows(cfg: Any, built: Built) -> Any:
    """The rows the trainer batches from (the method's own, else the data's training split),
    checked to hold at least one batch."""
    rows = built.method.train_data()
    source = f"training rows of data {cfg.data.name!r}" if rows is None else \
        f"training rows method {cfg.method.name!r} made"
    rows = built.data.training_rows() if rows is None else rows
    if cfg.train.batch_size > batch_size_of(rows):
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the "
                          f"{batch_size_of(rows)} {source}; lower train.batch_size")
    return rows


def load_run_config(run_dir: Path) -> Any:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.yaml)")
    return validate_config(yaml.safe_load(path.read_text()), source=str(path))


def evaluate_run(run_dir: str | Path) -> list[dict[str, Any]]:
    """Evaluate the exported student of a run beside its baseline(s), by the task whose
    export `student/` is; write eval.json and report.html. Returns the rows."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    return task_of_export(run_dir / "student").evaluate(run_dir, cfg)
