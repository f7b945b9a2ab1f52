"""Registers the classify family: its task, knowledge-distillation methods and classifier
backbones (the registries import this module on first use)."""

from distill.kd import methods, task  # noqa: F401
from distill.models import classifiers  # noqa: F401  (classifier backbones)
