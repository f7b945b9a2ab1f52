"""Imports every built-in component so its registry entries exist (configs name them)."""

from distill import data  # noqa: F401  (datasets: toy2d, file)
from distill.diffusion import methods, teachers  # noqa: F401  (methods, teacher sources)
from distill.kd import methods as kd_methods  # noqa: F401  (classifier KD methods)
from distill.lm import methods as lm_methods  # noqa: F401  (LM distillation methods)
from distill.lm import on_policy  # noqa: F401  (on-policy LM methods: on-policy, distillspec)
from distill.lm import teachers as lm_teachers  # noqa: F401  (causal-LM teacher sources)
from distill.models import causal_lm, classifiers, image, mlp  # noqa: F401  (backbones)
