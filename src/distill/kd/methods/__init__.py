"""Classifier knowledge-distillation methods, one file per family."""

from distill.kd.methods import logits  # noqa: F401
