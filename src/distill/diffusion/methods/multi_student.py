"""`multi-student`: the condition space shared out among several one-step students, each
distilled on its own classes and picked by the class at sampling time."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.distribution_matching import DMD2, DMD2Config
from distill.errors import ConfigError
from distill.method import ParamGroup
from distill.models.experts import ClassExperts
from distill.registry import METHODS


class MultiStudentConfig(DMD2Config):
    name: Literal["multi-student"] = "multi-student"  # type: ignore[assignment]
    students: int = Field(2, ge=1, description=(
        "K students (student.experts: K with expert_routing: class), each owning a contiguous "
        "group of the classes; 1: the one-student baseline (dmd2 with the same stages)"))
    tsm_steps: int = Field(0, ge=0, description=(
        "first trainer steps spent on teacher score matching (MSD's pretraining of students that "
        "do not start as the teacher): each student regresses the teacher's velocity at noised "
        "training points of its classes; distribution matching starts after them"))


@METHODS.register("multi-student", summary="Multi-Student Distillation: classes shared out among K one-step students, routed by class",
                  paper="Multi-student Diffusion Distillation for Better One-step Generators (Song et al., 2024)")
class MultiStudent(DMD2):
    """Song et al. 2024 (MSD). The classes are split into K contiguous groups and each group
    gets its own one-step student (`student.experts: K`, `expert_routing: class`; the exported
    student is the routed mixture, so sampling picks the student by the requested class). Each
    student is distilled with `dmd2`'s distribution matching on its own classes only: a
    generated row's gradient reaches only the student its label routes to.

    Smaller students start from random weights, so MSD first pretrains them by teacher score
    matching (TSM): for `tsm_steps` trainer steps each student regresses the teacher's
    prediction at noised training points of its classes, ||v_student(x_t, t, y) -
    v_teacher(x_t, t, y)||² with t ~ U(0, 1), on its own optimizer; then the fake score and the
    distribution-matching generator updates start (a fresh optimizer), as in `dmd2`.

    Implemented: the partition, routing at sampling, the per-student DMD2 objective (two
    time-scale updates, CFG on the teacher), TSM pretraining; students of the teacher's size
    start as the teacher (`init: teacher`), smaller backbones from random weights (`init:
    random`, with `tsm_steps`); `students: 1` is the one-student baseline with the same stages.
    Not implemented: the paper's adversarial (ADM) stage; one conditional fake score of the
    teacher's size serves all students (the paper trains a separate distillation per student,
    which a class-conditional fake score makes equivalent up to shared capacity).

    Key effect measured (2-class 8gaussians teacher, docs/methods.md#multi-student, BENCHMARKS.md,
    gated): 2 students of 1/146 of the teacher's size, with TSM, beat one student of their size
    with the same stages on every seed (1-step SWD 0.296 / 0.311 / 0.305 vs 0.349 / 0.333 /
    0.349); students of the teacher's size tie with one within seed noise.
    """

    Config = MultiStudentConfig
    cfg: MultiStudentConfig

    def __init__(self, cfg: MultiStudentConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, total_steps: int | None = None, **kwargs: object) -> None:
        routed = isinstance(student.net, ClassExperts)
        if (cfg.students == 1 and routed) or (cfg.students > 1 and (not routed or len(student.net.experts) != cfg.students)):
            raise ConfigError(f"multi-student trains one student per class group: set student.experts: "
                              f"{cfg.students} (method.students)"
                              + (" and student.expert_routing: class" if cfg.students > 1 else ""))
        if total_steps is not None and total_steps < cfg.tsm_steps + cfg.fake_updates:
            raise ConfigError(
                f"train.steps={total_steps} leaves no distribution-matching generator update after "
                f"method.tsm_steps={cfg.tsm_steps} (the generator steps on every "
                f"{cfg.fake_updates}th step after them); raise train.steps or lower method.tsm_steps")
        super().__init__(cfg, student, teacher, data, seed, total_steps=total_steps, **kwargs)

    def param_groups(self) -> list[ParamGroup]:
        groups = super().param_groups()
        if not self.cfg.tsm_steps:
            return groups
        start = self.cfg.tsm_steps
        for group in groups:
            group.start = start
        return [ParamGroup("student_tsm", self.student.parameters(), stop=start), *groups]

    def forward(self, batch: dict[str, Tensor], group: str, step: int) -> dict[str, Tensor]:
        if group == "student_tsm":
            return self.teacher_score_matching(batch)
        return super().forward(batch, group, step)

    def teacher_score_matching(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """MSD's TSM loss on the batch's training points x0 (B, *shape) and labels (B,)."""
        x0, labels = batch["x"], self.labels_for(len(batch["x"]), batch, batch["x"].device)
        t = torch.rand(len(x0), device=x0.device)
        x_t = self.student.schedule.add_noise(x0, torch.randn_like(x0), t)
        with torch.no_grad():
            target = self.teacher.velocity(x_t, t, labels)
        return {"teacher_score_matching": (self.student.velocity(x_t, t, labels) - target).pow(2).mean()}
