"""Step-distillation methods (and teacher training), one file per family."""

from distill.diffusion.methods import (  # noqa: F401
    consistency,
    disback,
    distribution_matching,
    flow_map,
    ode_pairs,
    phased_dmd,
    progressive,
    rectified_flow,
    tdm,
    teacher,
    twinflow,
)
