"""The method seam: what every distillation method provides to the trainer.

A method builds its auxiliary networks, declares its parameter groups with their update
schedules, and returns named losses for a batch. It never writes a training loop, moves
devices, casts precision, checkpoints or logs: the Trainer does all of that.

    class MyMethod(Method):
        def param_groups(self):
            return [ParamGroup("fake_score", self.fake.parameters()),
                    ParamGroup("student", self.student.parameters(), every=5)]
        def forward(self, batch, group, step):
            return {"dm": ...}  # losses of the group being updated
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from distill.train.batches import Batch


class MethodConfig(BaseModel):
    """Options of a method; subclasses narrow `name` to a Literal and add typed fields."""

    model_config = ConfigDict(extra="forbid")
    name: str


@dataclass
class ParamGroup:
    """Parameters that share an optimizer and an update schedule.

    The group is updated at the steps in [start, stop) where `(step - start) % every == offset`
    (steps count from 0; stop None: to the end), e.g. a pretraining stage that hands over to
    another group of the same parameters (with its own optimizer) at `stop`.
    `lr`, `betas` and `weight_decay` override the train section for this group only.
    `train.steps` counts trainer steps, so a group with every=5 is updated train.steps / 5
    times (DMD2's generator, for instance).
    """

    name: str
    params: Iterable[nn.Parameter]
    every: int = 1
    offset: int = 0
    start: int = 0
    stop: int | None = None
    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    parameters: list[nn.Parameter] = field(init=False)

    def __post_init__(self) -> None:
        self.parameters = [p for p in self.params if p.requires_grad]
        if self.every < 1 or not 0 <= self.offset < self.every:
            raise ValueError(
                f"parameter group {self.name!r}: need every >= 1 and 0 <= offset < every "
                f"(got every={self.every}, offset={self.offset}); such a group would never update"
            )
        if not self.parameters:
            raise ValueError(f"parameter group {self.name!r} has no trainable parameters")
        if self.start < 0 or (self.stop is not None and self.stop <= self.start):
            raise ValueError(f"parameter group {self.name!r}: need 0 <= start < stop "
                             f"(got start={self.start}, stop={self.stop})")

    def is_due(self, step: int) -> bool:
        if step < self.start or (self.stop is not None and step >= self.stop):
            return False
        return (step - self.start) % self.every == self.offset

    def updates(self, steps: int) -> int:
        """How many times the group steps in a run of `steps` trainer steps."""
        end = steps if self.stop is None else min(self.stop, steps)
        return max(0, math.ceil((end - self.start - self.offset) / self.every))


class Method(nn.Module):
    """Base class. Subclasses set `Config` and implement `param_groups` and `forward`.

    `student` must be the module that is EMA-averaged, evaluated and exported.
    Keys of submodules named in `frozen_modules` are left out of checkpoints (they are
    rebuilt from their source, e.g. the teacher).
    """

    Config: ClassVar[type[MethodConfig]]
    family: ClassVar[str] = "diffusion"  # the registered task (distill.task) that runs it
    needs_teacher: ClassVar[bool] = True
    trains_teacher: ClassVar[bool] = False  # trains a model from data, for a recipe teacher
    frozen_modules: ClassVar[tuple[str, ...]] = ("teacher",)
    student: nn.Module

    def param_groups(self) -> list[ParamGroup]:
        raise NotImplementedError

    def train(self, mode: bool = True) -> Method:
        """Like nn.Module.train, but submodules with no trainable parameter (the teacher,
        round teachers, EMA targets) always stay in eval mode."""
        super().train(mode)
        for child in self.children():
            if not any(p.requires_grad for p in child.parameters()):
                child.eval()
        return self

    def forward(self, batch: Batch, group: str, step: int) -> dict[str, Tensor]:
        """Named losses (scalars) for the parameter group `group` at trainer step `step`."""
        raise NotImplementedError

    def student_steps(self) -> list[int] | None:
        """Sampler steps the trained student is evaluated and exported at (None: a teacher,
        evaluated at eval.nfe)."""
        return None

    def student_sampler(self) -> str:
        """The sampler the trained student is evaluated and exported with."""
        return "euler"

    def student_eta(self) -> float:
        """The noise strength eta the student's sampler runs at (DDIM's; 0: deterministic)."""
        return 0.0

    def train_data(self) -> Batch | None:
        """Rows the trainer batches from (a tensor, or named tensors of equal length); None
        means the dataset's training split ({"x": samples, "y": labels when labelled})."""
        return None

    def batch_strata(self) -> tuple[Tensor, tuple[float, ...]] | None:
        """(stratum index per row of `train_data()` (N,), share of every batch for each
        stratum), e.g. a fixed share of labelled rows; None: rows drawn uniformly."""
        return None

    def prepare_batch(self, batch: Batch, micro_batches: int) -> Batch:
        """Called on this process's whole batch before it is split into `micro_batches`
        accumulation micro-batches (e.g. to normalise a loss over the whole batch)."""
        return batch

    def before_step(self, step: int) -> None:
        """Called at the start of every trainer step (e.g. to start a new round)."""

    def after_step(self, step: int, updated: list[str]) -> None:
        """Called after the groups in `updated` stepped (e.g. to update an EMA target)."""

    def step_logs(self) -> dict[str, float]:
        """Values to log after each trainer step beside the losses (e.g. a schedule's state)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state to checkpoint beyond parameters and buffers."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned."""

    def checkpoint_state(self) -> dict[str, Tensor]:
        """Parameters and buffers to checkpoint: everything but the frozen modules."""
        skip = tuple(f"{name}." for name in self.frozen_modules)
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}
