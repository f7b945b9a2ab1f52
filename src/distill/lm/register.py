"""Registers the lm family: its task, LM distillation methods (token-level and on-policy), the
causal-LM teacher sources and the Llama student (the registries import this module on first use)."""

from distill.lm import methods, on_policy, task, teachers  # noqa: F401
from distill.models import causal_lm  # noqa: F401  (the Llama student)
