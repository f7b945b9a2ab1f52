"""One run's life: config -> data -> teacher -> student -> method -> trainer -> evaluation
-> report -> export. `run()` is what `distill run` calls; it resumes an existing run dir."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate.utils import set_seed
from safetensors.torch import save_file

from distill.config import (
    RESUME_SAFE_KEYS,
    config_differences,
    config_hash,
    dump_config,
    validate_config,
    without_keys,
)
from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.eval_cache import cached_floor
from distill.diffusion.evaluate import Generator, evaluate_generators, make_scorer, straightness_of
from distill.diffusion.export import load_denoiser, save_denoiser
from distill.diffusion.teachers import load_configured_teacher
from distill.errors import CheckpointError, ConfigError, ModelMismatchError
from distill.kd.export import is_classifier_export
from distill.kd.runner import build_classify, evaluate_classifier_run, export_classify
from distill.lm.runner import build_lm, evaluate_lm_run, export_lm, is_lm_export
from distill.models.base import ModelConfig
from distill.registry import METHODS, MODELS
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


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def build_student(cfg: Any, data: ArrayData, teacher: Denoiser | None,
                  teacher_meta: dict[str, Any] | None) -> Denoiser:
    """The student denoiser from cfg.student, initialised from the teacher when asked."""
    num_classes = data.num_classes if teacher is None else teacher.num_classes
    student = cfg.student.make_denoiser(data.shape, num_classes)
    if cfg.student.init == "teacher":
        if teacher is None:
            raise ConfigError("student.init: 'teacher' needs a teacher section")
        if teacher_meta.get("format") == "diffusers":
            raise ModelMismatchError(
                "student.init=teacher copies a distill export's weights into the same student "
                "config; a diffusers teacher has no student config to copy. Set student.init: "
                "random (or train a distill teacher and use it).")
        # a two-time student (flow map) starts as its one-time teacher: same weights, zero
        # weights on its second time's inputs; time experts (dmd-phased) each start as the teacher
        mine = cfg.student.model_dump(exclude={"init"})
        # validated, so that settings added after the teacher was exported read as their defaults
        theirs = MODELS.get(teacher_meta["model"]["name"]).model_validate(
            teacher_meta["model"]).model_dump(exclude={"init"})
        one_time_into_two = mine["two_time"] and not theirs["two_time"]
        one_into_experts = mine["experts"] > 1 and theirs["experts"] == 1
        if one_time_into_two:
            theirs["two_time"] = True  # the differences init from the teacher allows
        if one_into_experts:
            theirs["experts"], theirs["expert_routing"] = mine["experts"], mine["expert_routing"]
        if mine != theirs:
            diffs = {k: (mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs))
                     if mine.get(k) != theirs.get(k)}
            shown = ", ".join(f"student.{k}={a!r} vs teacher {b!r}" for k, (a, b) in diffs.items())
            raise ModelMismatchError(
                f"student.init=teacher needs the student architecture to equal the teacher's: "
                f"{shown}. Set student.init=random or copy the teacher's model settings into student.")
        if one_time_into_two:
            student.net.load_one_time_state(teacher.net.state_dict())
        elif one_into_experts:
            student.net.load_single_state(teacher.net.state_dict())
        else:
            student.net.load_state_dict(teacher.net.state_dict())
    return student


def check_teacher(cfg: Any, data: ArrayData, meta: dict[str, Any]) -> None:
    """The teacher must work on this data's sample shape and classes."""
    if str(meta.get("format", "")).startswith("distill.classifier"):
        raise ModelMismatchError(f"method {cfg.method.name!r} distils a denoiser, but the teacher is "
                                 "a classifier; point teacher at a diffusion teacher run or recipe")
    shape = tuple(meta["shape"])
    if shape != data.shape:
        what = "points" if len(shape) == 1 else "images"
        raise ModelMismatchError(
            f"the teacher was trained on {what} of shape {shape} but data {cfg.data.name!r} has "
            f"samples of shape {data.shape}; use matching data or another teacher")
    if meta.get("num_classes") and data.num_classes and data.num_classes != meta["num_classes"]:
        raise ModelMismatchError(
            f"data {cfg.data.name!r} has {data.num_classes} classes but the teacher was trained on "
            f"{meta['num_classes']}: label y would ask it for its own class y, another thing; use the "
            "teacher's data settings (e.g. the same data.class_groups) or another teacher")


def check_batch_strata(method: Any, batch_size: int) -> None:
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


def build(cfg: Any) -> tuple[ArrayData, Denoiser | None, dict[str, Any] | None, Any]:
    """Data, teacher (frozen) and method instance for a validated config."""
    method_cls = METHODS.get(cfg.method.name)
    if not isinstance(cfg.student, ModelConfig):
        raise ConfigError(f"method {cfg.method.name!r} trains a denoiser: student.name must be a "
                          f"denoiser backbone (mlp, unet, dit), not the classifier {cfg.student.name!r}")
    data = cfg.data.build()
    teacher, meta = None, None
    if method_cls.needs_teacher:
        teacher, meta = load_configured_teacher(cfg, "teacher-8gaussians.yaml")
        check_teacher(cfg, data, meta)
    conditional = teacher.conditional if teacher else bool(data.num_classes)
    for key, scale in (("eval.guidance", cfg.eval.guidance),
                       ("method.guidance", getattr(cfg.method, "guidance", 1.0))):
        if scale != 1.0 and not conditional:
            raise ConfigError(f"{key}={scale} needs a class-conditional teacher; this one is "
                              f"unconditional (set {key} to 1, or train the teacher on labelled data)")
        if scale != 1.0 and not data.num_classes:
            raise ConfigError(f"{key}={scale} guides towards class labels, but data "
                              f"{cfg.data.name!r} has none (set {key} to 1 or use labelled data)")
    student = build_student(cfg, data, teacher, meta)
    method = method_cls(cfg.method, student=student, teacher=teacher, data=data,
                        seed=cfg.train.seed, total_steps=cfg.train.steps)
    return data, teacher, meta, method


def run(cfg: Any, run_dir: str | Path | None = None, *, force: bool = False,
        evaluate: bool = True) -> RunResult:
    """Train (or resume) the run `cfg` in `run_dir` (default runs/<name>), export the student,
    evaluate it beside its teacher and write the report."""
    run_dir = Path(run_dir or Path("runs") / cfg.name)
    check_run_dir(cfg, run_dir, force)
    accelerator = make_accelerator(cfg.train)
    set_seed(cfg.train.seed, device_specific=True)
    family = METHODS.get(cfg.method.name).family
    classify = family == "classify"
    if cfg.eval.assisted is not None and family != "lm":
        raise ConfigError(f"eval.assisted measures a language-model draft; method "
                          f"{cfg.method.name!r} does not train one. Remove eval.assisted")
    if family == "lm":
        data, _, teacher_meta, method = build_lm(cfg, run_dir)
    else:
        data, _, teacher_meta, method = build_classify(cfg) if classify else build(cfg)
    rows = method.train_data()
    source = f"training rows of data {cfg.data.name!r}" if rows is None else \
        f"training rows method {cfg.method.name!r} made"
    rows = data.training_rows() if rows is None else rows
    if cfg.train.batch_size > batch_size_of(rows):
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the "
                          f"{batch_size_of(rows)} {source}; lower train.batch_size")
    check_batch_strata(method, cfg.train.batch_size)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
    accelerator.wait_for_everyone()
    trainer = Trainer(method, cfg.train, run_dir, rows, accelerator, config_hash(cfg, RESUME_SAFE_KEYS))
    trainer.resume()
    if trainer.step < cfg.train.steps:
        trainer.fit()
    else:
        accelerator.print(f"[distill] {run_dir} already trained to step {trainer.step}")
    result = RunResult(run_dir, [])
    if accelerator.is_main_process and family == "lm":
        export_lm(run_dir, trainer.student(), teacher_meta["tokenizer"], cfg)
        if evaluate:
            result.rows = evaluate_lm_run(run_dir, cfg)
    elif accelerator.is_main_process and classify:
        export_classify(run_dir, trainer.student(), cfg, data)
        if evaluate:
            result.rows = evaluate_classifier_run(run_dir, cfg)
    elif accelerator.is_main_process:
        role = "teacher" if cfg.method.name == "teacher" else "student"
        save_denoiser(run_dir / "student", trainer.student(), cfg.student, data.shape, role=role,
                      steps=method.student_steps(), sampler=method.student_sampler(),
                      method=cfg.method.name, run=cfg.name,
                      teacher_guidance=getattr(cfg.method, "guidance", 1.0))
        if evaluate:
            result.rows = evaluate_run(run_dir)
    accelerator.wait_for_everyone()
    return result


def load_run_config(run_dir: Path) -> Any:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.yaml)")
    return validate_config(yaml.safe_load(path.read_text()), source=str(path))


def evaluate_run(run_dir: str | Path) -> list[dict[str, Any]]:
    """Evaluate the exported student (and its teacher) of a run; write eval.json,
    samples.safetensors and report.html. Returns the rows."""
    from distill.report import write_report

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if is_classifier_export(run_dir / "student"):
        return evaluate_classifier_run(run_dir, cfg)
    if is_lm_export(run_dir / "student"):
        return evaluate_lm_run(run_dir, cfg)
    student, meta = load_denoiser(run_dir / "student")
    data = cfg.data.build()
    sampler, guidance = cfg.eval.sampler, cfg.eval.guidance
    if meta.get("teacher_guidance", 1.0) != 1.0:  # a student of the guided teacher: compare with it
        guidance = meta["teacher_guidance"]
    if meta["role"] == "teacher":
        models = {"teacher": Generator(student, cfg.eval.nfe, sampler, guidance, cfg.eval.eta)}
    else:
        teacher, _ = cfg.teacher.load()
        models = {"teacher": Generator(teacher, cfg.eval.nfe, sampler, guidance, cfg.eval.eta),
                  "student": Generator(student, meta["steps"], meta.get("sampler", "euler"))}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for gen in models.values():
        gen.denoiser.to(device)
    scorer = make_scorer(data, cfg.eval)
    reference = scorer.reference.contiguous().view(torch.uint8).numpy().tobytes()
    context = {"data": cfg.data.model_dump(mode="json"), "device": device.type, "scorer": scorer.info(),
               "reference": hashlib.sha256(reference).hexdigest(),
               "eval": cfg.eval.model_dump(mode="json", exclude={"nfe", "timing_repeats", "timing_samples"})}
    rows, samples = evaluate_generators(models, data, cfg.eval, scorer, context,
                                        cached=("teacher",) if meta["role"] != "teacher" else ())
    result = {"run": cfg.name, "method": cfg.method.name, "dataset": cfg.data.name,
              "primary_metric": scorer.primary, "metrics": scorer.metrics,
              "n_samples": len(scorer.reference) if data.is_image else
              min(cfg.eval.n_samples, len(data.test)),
              "n_generated": cfg.eval.n_samples, "rows": rows, "floor": cached_floor(context, scorer.floor),
              "floor_samples": len(data.test) if data.is_image else None,
              **scorer.info()}
    if cfg.eval.straightness:
        result["straightness"] = straightness_of(models, data, cfg.eval)
    write_text_atomic(run_dir / "eval.json", json.dumps(result, indent=2))
    save_file({k: v.contiguous() for k, v in samples.items()}, run_dir / "samples.safetensors")
    write_report(run_dir)
    return rows
