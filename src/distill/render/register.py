"""Registers the render family: its task, score-distillation methods and renderers."""

from distill.render import methods, splats, task  # noqa: F401
