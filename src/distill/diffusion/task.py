"""The diffusion task: step distillation (and teacher training) of denoisers.

Builds the data, the frozen teacher (checked against the data's shape and classes) and the
student denoiser (optionally initialised from the teacher), exports the trained student as a
denoiser folder (diffusers' format for diffusers backbones), and evaluates it beside its
teacher at every NFE on the same noise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.eval_cache import cached_floor
from distill.diffusion.evaluate import Generator, evaluate_generators, make_scorer, straightness_of
from distill.diffusion.export import (
    DIFFUSERS_FORMAT,
    FORMAT,
    LEGACY_FORMAT,
    load_denoiser,
    save_denoiser,
)
from distill.diffusion.report import diffusion_sections
from distill.diffusion.reward import RealismRewardConfig, build_reward_model, mean_reward
from distill.errors import ConfigError, ModelMismatchError
from distill.export_dir import write_text_atomic
from distill.models.base import ModelConfig
from distill.registry import METHODS, MODELS, TASKS
from distill.report.compare import nfe_table
from distill.report.html import write_report
from distill.task import Built, Task
from distill.teachers import load_configured_teacher


def build_student(cfg: Any, data: ArrayData, teacher: Denoiser | None,
                  teacher_meta: dict[str, Any] | None) -> Denoiser:
    """The student denoiser from cfg.student, initialised from the teacher when asked."""
    num_classes = data.num_classes if teacher is None else teacher.num_classes
    student = cfg.student.make_denoiser(data.shape, num_classes)
    if cfg.student.init == "teacher":
        if teacher is None:
            raise ConfigError("student.init: 'teacher' needs a teacher section")
        if teacher_meta.get("format") == DIFFUSERS_FORMAT:
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
        one_into_policy = mine["policy_components"] > 0 and not theirs["policy_components"]
        one_into_head = mine.get("flow_head", 0) > 0 and not theirs.get("flow_head", 0)
        if one_into_head:  # the trunk and head start as the teacher's layers (tmd)
            theirs["flow_head"], theirs["inner_steps"] = mine["flow_head"], mine["inner_steps"]
        if one_into_policy:  # every component's mean starts as the teacher's velocity
            theirs["policy_components"] = mine["policy_components"]
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
        elif one_into_policy:
            student.net.load_one_output_state(teacher.net.state_dict())
        elif one_into_head:
            student.net.load_plain_state(teacher.net.state_dict())
        else:
            student.net.load_state_dict(teacher.net.state_dict())
    return student


def check_teacher(cfg: Any, data: ArrayData, meta: dict[str, Any]) -> None:
    """The teacher must work on this data's sample shape and classes."""
    if meta.get("format") not in (*DiffusionTask.formats, DIFFUSERS_FORMAT):
        raise ModelMismatchError(f"method {cfg.method.name!r} distils a denoiser, but the teacher is "
                                 f"a {meta.get('format')!r} export, not a denoiser; point teacher at a "
                                 "diffusion teacher run or recipe")
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


def build_diffusion(cfg: Any) -> Built:
    """Data, teacher (frozen, checked against the data) and method instance for a validated
    config of a step-distillation (or teacher-training) method."""
    method_cls = METHODS.get(cfg.method.name)
    if not isinstance(cfg.student, ModelConfig):
        raise ConfigError(f"method {cfg.method.name!r} trains a denoiser: student.name must be a "
                          f"denoiser backbone (mlp, unet, dit), not the classifier {cfg.student.name!r}")
    data = cfg.data.build()
    teacher, meta = None, None
    if method_cls.needs_teacher:
        teacher, meta = load_configured_teacher(cfg, DiffusionTask.example_teacher)
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
                        seed=cfg.train.seed, total_steps=cfg.train.steps, teacher_meta=meta)
    return Built(data, teacher, meta, method)


def evaluate_diffusion_run(run_dir: Path, cfg: Any) -> list[dict[str, Any]]:
    """Evaluate the exported student (and its teacher) of a run on the same noise; write
    eval.json, samples.safetensors and report.html. Returns the rows."""
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
                  "student": Generator(student, meta["steps"], meta.get("sampler", "euler"),
                                       eta=meta.get("eta", 0.0))}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for gen in models.values():
        gen.denoiser.to(device)
    scorer = make_scorer(data, cfg.eval)
    reference = scorer.reference.contiguous().view(torch.uint8).numpy().tobytes()
    context = {"data": cfg.data.model_dump(mode="json"), "device": device.type, "scorer": scorer.info(),
               "reference": hashlib.sha256(reference).hexdigest(),
               "eval": cfg.eval.model_dump(mode="json", exclude={"nfe", "timing_repeats", "timing_samples"})}
    extra = None
    reward_cfg = getattr(cfg.method, "reward", None)
    if reward_cfg is not None and reward_cfg.enabled:  # reward-tuned students: every row's reward
        reward_model = build_reward_model(reward_cfg, data).to(device)
        context["reward"] = reward_cfg.model_dump(mode="json", include=set(RealismRewardConfig.model_fields))
        def extra(x: Tensor) -> dict[str, float]:
            return {"reward": mean_reward(reward_model, x)}
    rows, samples = evaluate_generators(models, data, cfg.eval, scorer, context,
                                        cached=("teacher",) if meta["role"] != "teacher" else (),
                                        extra_metrics=extra)
    result = {"run": cfg.name, "method": cfg.method.name, "dataset": cfg.data.name,
              "family": DiffusionTask.name, "primary_metric": scorer.primary, "metrics": scorer.metrics,
              "n_samples": len(scorer.reference) if data.is_image else
              min(cfg.eval.n_samples, len(data.test)),
              "n_generated": cfg.eval.n_samples, "rows": rows, "floor": cached_floor(context, scorer.floor),
              "floor_samples": min(cfg.eval.n_samples, len(data.train)) if data.is_image else None,
              **scorer.info()}
    if cfg.eval.straightness:
        result["straightness"] = straightness_of(models, data, cfg.eval)
    write_text_atomic(run_dir / "eval.json", json.dumps(result, indent=2))
    save_file({k: v.contiguous() for k, v in samples.items()}, run_dir / "samples.safetensors")
    write_report(run_dir)
    return rows


@TASKS.register("diffusion", summary="step distillation of diffusion/flow models (and teacher training)")
class DiffusionTask(Task):
    name: ClassVar[str] = "diffusion"
    formats: ClassVar[tuple[str, ...]] = (FORMAT, LEGACY_FORMAT)
    example_teacher: ClassVar[str] = "teacher-8gaussians.yaml"

    def build(self, cfg: Any, run_dir: Path) -> Built:
        return build_diffusion(cfg)

    def export(self, run_dir: Path, cfg: Any, built: Built, student: nn.Module) -> None:
        method = built.method
        role = "teacher" if method.trains_teacher else "student"
        save_denoiser(run_dir / "student", student, cfg.student, built.data.shape, role=role,
                      steps=method.student_steps(), sampler=method.student_sampler(),
                      eta=method.student_eta(),
                      method=cfg.method.name, run=cfg.name,
                      teacher_guidance=getattr(cfg.method, "guidance", 1.0))

    def load_export(self, directory: Path) -> tuple[nn.Module, dict[str, Any]]:
        return load_denoiser(directory)

    def evaluate(self, run_dir: Path, cfg: Any) -> list[dict[str, Any]]:
        return evaluate_diffusion_run(run_dir, cfg)

    def table(self, eval_data: dict[str, Any]) -> list[list[str]]:
        return nfe_table(eval_data)

    def report_sections(self, eval_data: dict[str, Any], run_dir: Path) -> tuple[str, str]:
        return diffusion_sections(eval_data)
