"""The trainer runs any method's parameter groups on their own schedules (DMD2-style),
guards against non-finite losses, and accumulates gradients like one big batch."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.config import TrainConfig
from distill.errors import NonFiniteLossError
from distill.method import Method, ParamGroup
from distill.train import checkpoint
from distill.train.trainer import Trainer


class TwoGroupToy(Method):
    """A DMD2-shaped method: a critic updated every step, a generator every 5th step
    (offset 4), and an EMA target of the critic updated after each step."""

    needs_teacher = False

    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Linear(2, 2)  # the generator
        self.critic = nn.Linear(2, 1)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.generator_snapshots: list[torch.Tensor] = []
        self.calls: list[tuple[int, str]] = []

    def param_groups(self):
        return [ParamGroup("critic", self.critic.parameters()),
                ParamGroup("generator", self.student.parameters(), every=5, offset=4, lr=1e-2)]

    def forward(self, batch, group, step):
        self.calls.append((step, group))
        fake = self.student(batch)
        if group == "critic":
            return {"critic": (self.critic(fake.detach()) - self.critic(batch)).pow(2).mean()
                    + self.critic(batch).pow(2).mean()}
        return {"generator": -self.critic(fake).mean() + fake.pow(2).mean()}

    def after_step(self, step, updated):
        with torch.no_grad():
            for t, c in zip(self.target.parameters(), self.critic.parameters(), strict=True):
                t.lerp_(c, 0.5)
        self.generator_snapshots.append(self.student.weight.detach().clone())


def make_trainer(method: Method, tmp_path: Path, **train) -> Trainer:
    cfg = TrainConfig(progress=False, batch_size=32, log_every=5, checkpoint_every=1000, **train)
    return Trainer(method, cfg, tmp_path, torch.randn(256, 2))


def test_two_group_schedule(tmp_path: Path):
    method = TwoGroupToy()
    initial_target = method.target.weight.detach().clone()
    trainer = make_trainer(method, tmp_path, steps=20, ema_decay=0.9)
    trainer.fit()
    critic_steps = [s for s, g in method.calls if g == "critic"]
    generator_steps = [s for s, g in method.calls if g == "generator"]
    assert critic_steps == list(range(20))
    assert generator_steps == [4, 9, 14, 19]
    # the generator's weights change exactly at its update steps
    snaps = method.generator_snapshots
    changed = [s for s in range(1, 20) if not torch.equal(snaps[s], snaps[s - 1])]
    assert changed == [4, 9, 14, 19]
    assert trainer.optimizers["generator"].state_dict()["param_groups"][0]["lr"] == 1e-2
    opt_state = trainer.optimizers["generator"].state_dict()["state"]
    assert int(next(iter(opt_state.values()))["step"]) == 4
    # the EMA target (a method-owned network) followed the critic; it was never optimised
    assert not torch.equal(method.target.weight, initial_target)
    assert method.target.weight.grad is None
    assert trainer.student() is trainer.ema.shadow
    assert trainer.ema.updates == 4  # the EMA moves only when the student (generator) stepped
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/generator/generator" in r for r in logged)
    assert all("loss/critic/critic" in r for r in logged)
    assert (tmp_path / "checkpoints" / checkpoint.step_dir_name(20)).is_dir()


def test_group_that_never_updates_is_rejected():
    with pytest.raises(ValueError, match="never update"):
        ParamGroup("g", nn.Linear(1, 1).parameters(), every=5, offset=5)
    with pytest.raises(ValueError, match="start < stop"):
        ParamGroup("g", nn.Linear(1, 1).parameters(), start=3, stop=3)


def test_group_window_hands_the_parameters_over_at_stop():
    params = list(nn.Linear(1, 1).parameters())
    pretrain = ParamGroup("pretrain", params, stop=4)
    later = ParamGroup("later", params, every=3, offset=2, start=4)
    assert [s for s in range(12) if pretrain.is_due(s)] == [0, 1, 2, 3]
    assert [s for s in range(12) if later.is_due(s)] == [6, 9]
    assert (pretrain.updates(12), later.updates(12), later.updates(4)) == (4, 2, 0)


class NaNAtStep(Method):
    needs_teacher = False

    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.student = nn.Linear(2, 2)
        self.bad_step = bad_step

    def param_groups(self):
        return [ParamGroup("student", self.student.parameters())]

    def forward(self, batch, group, step):
        loss = self.student(batch).pow(2).mean()
        return {"mse": loss * float("nan") if step == self.bad_step else loss}


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path):
    method = NaNAtStep(bad_step=7)
    trainer = make_trainer(method, tmp_path, steps=20)
    trainer.cfg.checkpoint_every = 5
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    message = str(info.value)
    assert "mse" in message and "step 7" in message and "step-00000005" in message
    good, problems = checkpoint.latest_valid(tmp_path / "checkpoints")
    assert good is not None and good.name == "step-00000005" and not problems
    # the checkpoint holds the weights from before the NaN
    restored = checkpoint.load(good).model["student.weight"]
    assert torch.isfinite(restored).all()


class Regression(Method):
    needs_teacher = False

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.student = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))

    def param_groups(self):
        return [ParamGroup("student", self.student.parameters())]

    def forward(self, batch, group, step):
        return {"mse": (self.student(batch) - batch.sum(1, keepdim=True)).pow(2).mean()}


def test_gradient_accumulation_matches_one_big_batch(tmp_path: Path):
    weights = []
    for accum in (1, 4):
        method = Regression()
        trainer = make_trainer(method, tmp_path / f"a{accum}", steps=3, grad_accum=accum,
                               clip_grad_norm=None)
        trainer.fit()
        weights.append(method.student[0].weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], atol=1e-6, rtol=1e-5)
