"""Step-distillation methods (and teacher training), one file per family."""

from distill.diffusion.methods import (  # noqa: F401
    arcflow,
    consistency,
    decoupled_dmd,
    disback,
    distribution_matching,
    flash_dmd,
    flow_map,
    mdt,
    multi_student,
    ode_pairs,
    phased_dmd,
    progressive,
    pso,
    rectified_flow,
    scm,
    slam,
    tdm,
    teacher,
    tmd,
    twinflow,
)
