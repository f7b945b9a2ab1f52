"""Transition matching distillation (TMD; Nie et al., "Transition Matching Distillation for Fast
Video Generation", 2026).

A few-step student whose every outer step is a transition sampled by a lightweight conditional
flow: the backbone is split into a main trunk, run once per outer step to extract features of
(x_t, t), and a flow head (its last layers), run for several inner flow updates on those
features (`distill.models.flow_head`: `student: {flow_head: L, inner_steps: M}`). The student
is then trained by distribution matching (DMD2) with the flow head rolled out in every
transition step, the gradient going through the rollout. At the same number of outer steps the
head's inner updates add M − 1 passes of the head only, not of the trunk.

Implemented: the trunk/flow-head split initialised from the teacher (the head's inner inputs
start at zero weight, so the student starts as the teacher), the inner flow (rectified-flow
Euler steps from y_0 ~ N(0, I) over the network's own prediction, a velocity here), and the
DMD2 stage with the rollout in each of `student_steps` transitions (backward simulation, the
multistep sampler, the two time-scale fake-score rule: `dmd2`'s options). Not implemented: the
paper's first stage, Transition-Matching MeanFlow pretraining of the head as a conditional
inner flow map with a finite-difference JVP (the head here starts as the teacher's layers and
learns in the DMD stage only), its discriminator term (`gan_weight` of dmd2 is available), and
video: the backbone is the toy/digits MLP.
"""

from __future__ import annotations

from typing import Literal

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.methods.distribution_matching import DMD2, DMD2Config
from distill.errors import ConfigError
from distill.registry import METHODS


class TMDConfig(DMD2Config):
    name: Literal["tmd"] = "tmd"


@METHODS.register("tmd", summary="transition matching distillation: a few-step student whose steps are "
                  "sampled by a flow head on a trunk's features, trained by distribution matching",
                  paper="Transition Matching Distillation for Fast Video Generation (Nie et al., 2026)")
class TMD(DMD2):
    Config = TMDConfig
    cfg: TMDConfig

    def __init__(self, cfg: TMDConfig, student: Denoiser, teacher: Denoiser, **kwargs: object) -> None:
        if not getattr(student.net, "head_layers", 0):
            raise ConfigError("method tmd distils into a trunk with a flow head: set student.flow_head "
                              "(hidden layers in the head, e.g. 1) and student.inner_steps (e.g. 2) on "
                              "an mlp student")
        super().__init__(cfg, student, teacher, **kwargs)
