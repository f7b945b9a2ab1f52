"""Step-distillation methods (and teacher training), one file per family."""

from distill.diffusion.methods import flow_matching, ode_pairs, progressive  # noqa: F401
