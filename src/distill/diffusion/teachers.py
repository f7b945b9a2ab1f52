"""Diffusion teacher sources beyond the shared `run` and `recipe` (distill.teachers):

    teacher: {name: diffusers, path: my-pipeline/unet}

a diffusers UNet2DModel or DiT folder you bring, on any schedule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.export import load_denoiser, load_diffusers_denoiser
from distill.diffusion.schedules import ScheduleName
from distill.export_dir import META_FILE
from distill.registry import TEACHERS
from distill.teachers import TeacherSource


@TEACHERS.register("diffusers", summary="a diffusers UNet2DModel/DiT folder (save_pretrained), any schedule",
                   paper="")
class DiffusersTeacher(TeacherSource):
    """A diffusers model you bring, e.g. a pipeline's `unet/` folder. Its schedule and
    prediction type come from `schedule`/`prediction`, else from the scheduler config beside
    it. Timesteps follow diffusers' conventions (1000 t; the DDPM index on vp-discrete)."""

    name: Literal["diffusers"] = "diffusers"
    path: Path
    schedule: ScheduleName | None = Field(None, description="the model's noise schedule (default: its scheduler config)")
    prediction: Literal["velocity", "x0", "eps"] | None = Field(
        None, description="the model's prediction type (default: its scheduler config)")
    num_classes: int | None = Field(None, gt=0, description=(
        "classes of a conditional model (default: its class embeddings minus the null class)"))

    def describe(self) -> str:
        return str(self.path)

    def load_export(self) -> tuple[Denoiser, dict[str, Any]]:
        if (self.path / META_FILE).is_file():  # one of our own exports
            return load_denoiser(self.path)
        return load_diffusers_denoiser(self.path, self.schedule, self.prediction, self.num_classes)
