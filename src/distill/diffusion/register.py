"""Registers the diffusion family: its task, step-distillation methods, denoiser backbones and
the diffusers teacher source (the registries import this module on first use)."""

from distill.diffusion import methods, task, teachers  # noqa: F401
from distill.models import image, mlp  # noqa: F401  (denoiser backbones)
