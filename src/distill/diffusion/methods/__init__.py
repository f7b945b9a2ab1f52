"""Step-distillation methods (and teacher training), one file per family."""

from distill.diffusion.methods import (  # noqa: F401
    consistency,
    distribution_matching,
    flow_map,
    ode_pairs,
    progressive,
    rectified_flow,
    teacher,
)
