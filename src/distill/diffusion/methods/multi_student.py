"""`multi-student`: the condition space shared out among several one-step students, each
distilled on its own classes and picked by the class at sampling time."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill.data.base import ArrayData
from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.distribution_matching import DMD2, DMD2Config
from distill.errors import ConfigError
from distill.models.experts import ClassExperts
from distill.registry import METHODS


class MultiStudentConfig(DMD2Config):
    name: Literal["multi-student"] = "multi-student"  # type: ignore[assignment]
    students: int = Field(2, ge=2, description=(
        "K students (student.experts: K with expert_routing: class), each owning a contiguous "
        "group of the classes"))


@METHODS.register("multi-student", summary="Multi-Student Distillation: classes shared out among K one-step students, routed by class",
                  paper="Multi-student Diffusion Distillation for Better One-step Generators (Song et al., 2024)")
class MultiStudent(DMD2):
    """Song et al. 2024 (MSD). The classes are split into K contiguous groups and each group
    gets its own one-step student (`student.experts: K`, `expert_routing: class`; the exported
    student is the routed mixture, so sampling picks the student by the requested class). Each
    student is distilled with `dmd2`'s distribution matching on its own classes only: a
    generated row's gradient reaches only the student its label routes to.

    Implemented: the partition, routing at sampling, the per-student DMD2 objective (two
    time-scale updates, CFG on the teacher); students of the teacher's size start as the
    teacher (`init: teacher`); smaller backbones need `init: random`. Not implemented: the paper's teacher score
    matching stage that pretrains smaller students, its adversarial variant; one conditional
    fake score serves all students (the paper trains a separate distillation per student,
    which a class-conditional fake score makes equivalent up to shared capacity).
    """

    Config = MultiStudentConfig
    cfg: MultiStudentConfig

    def __init__(self, cfg: MultiStudentConfig, student: Denoiser, teacher: Denoiser, data: ArrayData,
                 seed: int = 0, **kwargs: object) -> None:
        if not isinstance(student.net, ClassExperts) or len(student.net.experts) != cfg.students:
            raise ConfigError(f"multi-student trains one student per class group: set student.experts: "
                              f"{cfg.students} (method.students) and student.expert_routing: class")
        super().__init__(cfg, student, teacher, data, seed, **kwargs)
