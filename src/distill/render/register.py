"""Registers the render family: its task, score-distillation methods and renderers."""

from distill.render import generator, methods, splats, task  # noqa: F401
