"""Step-distillation methods (and teacher training), one file per family."""

from distill.diffusion.methods import consistency, distribution_matching, ode_pairs, progressive, teacher  # noqa: F401
