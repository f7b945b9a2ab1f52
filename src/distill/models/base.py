"""What every registered backbone config provides: a network and the denoiser around it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from distill.diffusion.denoiser import Denoiser
from distill.diffusion.schedules import ScheduleName
from distill.errors import ConfigError
from distill.models.experts import ClassExperts, TimeExperts

PURE_NOISE_AT_ONE = ("flow", "trigflow")  # schedules with alpha(1) = 0


class ModelConfig(BaseModel):
    """A registered backbone. `build(shape, num_classes)` returns
    `net(x: (B, *shape), t: (B,), cond: (B,) long | None) -> (B, *shape)`; a class-conditional
    net (num_classes = K) embeds K + 1 labels, the last one being the null class of CFG."""

    model_config = ConfigDict(extra="forbid")

    name: str
    prediction: Literal["velocity", "x0", "eps"] = "velocity"
    schedule: ScheduleName = "flow"
    preconditioning: Literal["none", "edm"] = "none"
    init: Literal["random", "teacher"] = "random"
    time_scale: float = Field(1000.0, gt=0, description=(
        "how fast the network's time embedding turns: the backbone sees time_scale * t for t "
        "in [0, 1] (the mlp's fastest sinusoid, diffusers' timestep). 1000 is the DDPM "
        "convention; methods that differentiate the network along time (scm, meanflow, "
        "flow-map) train better with a small one, as sCM's embedding of c_noise(t) = t "
        "(Lu & Song 2024, Sec. 4.1)"))
    two_time: bool = Field(False, description=(
        "the network also takes a second time s and predicts the average velocity from s to t "
        "(flow maps: meanflow); initialised from a one-time teacher, it starts as the teacher"))
    experts: int = Field(1, ge=1, description=(
        "K > 1: K copies of the network, each row routed to one by `expert_routing`; "
        "initialised from a one-network teacher, every expert starts as the teacher"))
    expert_routing: Literal["time", "class"] = Field("time", description=(
        "time: expert k serves the k-th of K equal time intervals from noise to data "
        "(dmd-phased); class: the classes split into K contiguous groups (multi-student)"))
    policy_components: int = Field(0, ge=0, description=(
        "K > 0: the network outputs an ArcFlow momentum-mixture policy of K components (the "
        "velocity over a whole step, `arcflow` students) instead of one prediction; "
        "initialised from a one-prediction teacher, every component starts as the teacher"))
    supports_two_time: ClassVar[bool] = False
    supports_policy: ClassVar[bool] = False
    supports_experts: ClassVar[bool] = True  # False: saved as one diffusers model, no expert copies

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.preconditioning == "edm" and self.prediction != "x0":
            raise ValueError("preconditioning: edm makes the model predict x0; set prediction: x0")
        if self.schedule in PURE_NOISE_AT_ONE and (self.prediction == "eps" or self.preconditioning == "edm"):
            raise ValueError(
                f"schedule {self.schedule} has alpha(1) = 0 (pure noise), where x0 cannot be "
                "recovered from an eps prediction nor x_t be rescaled by 1/alpha: use "
                "prediction: velocity or x0 without preconditioning, or a VP/edm schedule")
        if self.two_time and (self.schedule, self.prediction, self.preconditioning) != ("flow", "velocity", "none"):
            raise ValueError("two_time: true predicts an average velocity: it needs schedule: flow, "
                             "prediction: velocity and no preconditioning")
        if self.experts == 1 and self.expert_routing != "time":
            raise ValueError(f"expert_routing: {self.expert_routing} needs experts > 1 (one network has no one to route to)")
        if self.experts > 1 and self.two_time:
            raise ValueError("experts > 1 and two_time: true do not combine; choose one")
        if self.policy_components and (self.prediction, self.preconditioning) != ("velocity", "none"):
            raise ValueError("policy_components > 0 outputs velocities (a momentum-mixture policy): "
                             "set prediction: velocity and preconditioning: none")
        if self.policy_components and (self.two_time or self.experts > 1):
            raise ValueError("policy_components > 0 does not combine with two_time or experts > 1; choose one")
        if self.schedule == "vp-discrete" and self.time_scale != 1000.0:
            raise ValueError("schedule: vp-discrete feeds the network the DDPM step index 0..999; "
                             "time_scale applies to the continuous schedules: leave it at 1000")
        if self.schedule == "edm" and self.preconditioning != "edm":
            raise ValueError("schedule: edm has noise levels up to sigma = 80, which a network "
                             "cannot take unscaled; set preconditioning: edm and prediction: x0")
        return self

    def build(self, shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
        raise NotImplementedError

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise ConfigError if this backbone cannot take samples of `shape`."""

    def make_denoiser(self, shape: tuple[int, ...], num_classes: int | None) -> Denoiser:
        """The backbone wrapped with this config's schedule, prediction and preconditioning."""
        self.check_shape(shape)
        if self.two_time and not self.supports_two_time:
            raise ConfigError(f"student.two_time: the {self.name!r} backbone takes one time only; "
                              "use the mlp or unet backbone for flow-map students")
        if self.policy_components and not self.supports_policy:
            raise ConfigError(f"student.policy_components: the {self.name!r} backbone has no policy head; "
                              "use the mlp backbone for arcflow students")
        net = self.build(shape, num_classes)
        if self.experts > 1:
            if not self.supports_experts:
                raise ConfigError(f"student.experts: the {self.name!r} backbone is a diffusers model, "
                                  "which is saved as one network; use the mlp backbone for experts")
            nets = [net, *(self.build(shape, num_classes) for _ in range(self.experts - 1))]
            if self.expert_routing == "time":
                net = TimeExperts(nets)
            elif not num_classes or num_classes < self.experts:
                raise ConfigError(f"student.expert_routing: class needs labelled data with at least "
                                  f"{self.experts} classes (student.experts) to share out; this data has "
                                  f"{num_classes or 'no'} classes")
            else:
                net = ClassExperts(nets, num_classes)
        return Denoiser(net, self.schedule, self.prediction,
                        num_classes=num_classes, preconditioning=self.preconditioning)
