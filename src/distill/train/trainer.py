"""The Trainer: runs any Method on Accelerate (one process, or DDP/FSDP via `accelerate launch`).

It owns everything that is not the method's math: parameter-group schedules and their
optimizers, gradient accumulation, mixed precision, grad-norm clipping, the student's EMA,
the non-finite-loss guard, progress bar, metrics, atomic checkpoints and exact resume.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch import Tensor, nn
from tqdm.auto import tqdm

from distill.config import TrainConfig
from distill.errors import CheckpointError, ConfigError, NonFiniteLossError
from distill.method import Method, ParamGroup
from distill.train import checkpoint
from distill.train.batches import Batch, BatchStream, batch_to, split_batch
from distill.train.ema import EMA
from distill.train.logging import MetricsLogger


def make_accelerator(train: TrainConfig) -> Accelerator:
    """An Accelerator for this process; unused-parameter detection on, since a step may
    update only some parameter groups."""
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # Without a GPU, accelerate only sets up multi-process CPU training (gloo) when asked for cpu.
    return Accelerator(mixed_precision=train.mixed_precision, kwargs_handlers=[ddp],
                       cpu=not torch.cuda.is_available())


def lr_lambda(train: TrainConfig, updates: int):
    """Warm-up then constant or cosine decay, as a function of the group's update count."""

    def factor(count: int) -> float:
        if train.warmup_steps and count < train.warmup_steps:
            return (count + 1) / train.warmup_steps
        if train.lr_schedule == "cosine":
            span = max(1, updates - train.warmup_steps)
            progress = min(1.0, (count - train.warmup_steps) / span)
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


class Trainer:
    """Trains `method` for `train.steps` trainer steps on rows from `method.train_data()`
    (or `rows`), writing checkpoints and metrics under `run_dir`."""

    def __init__(self, method: Method, train: TrainConfig, run_dir: Path, rows: Batch,
                 accelerator: Accelerator | None = None, config_hash: str = "") -> None:
        self.cfg, self.run_dir, self.config_hash = train, Path(run_dir), config_hash
        self.accelerator = accelerator or make_accelerator(train)
        acc = self.accelerator
        world = acc.num_processes
        if train.batch_size % (world * train.grad_accum):
            raise ConfigError(
                f"train.batch_size={train.batch_size} must be divisible by processes × "
                f"train.grad_accum = {world} × {train.grad_accum}")
        self.groups: list[ParamGroup] = method.param_groups()
        self.optimizers = {g.name: torch.optim.AdamW(
            g.parameters, lr=g.lr or train.lr, betas=g.betas or train.betas,
            weight_decay=train.weight_decay if g.weight_decay is None else g.weight_decay)
            for g in self.groups}
        self.schedulers = {g.name: torch.optim.lr_scheduler.LambdaLR(
            self.optimizers[g.name], lr_lambda(train, g.updates(train.steps)))
            for g in self.groups}
        prepared = acc.prepare(method, *self.optimizers.values())
        self.model, opts = prepared[0], prepared[1:]
        self.optimizers = dict(zip(self.optimizers, opts, strict=True))
        self.method: Method = acc.unwrap_model(self.model)
        self.ema = EMA(self.method.student, train.ema_decay) if train.ema_decay else None
        self.stream = BatchStream(rows, train.batch_size, train.seed, acc.process_index, world,
                                  strata=self.method.batch_strata())
        student_ids = {id(p) for p in self.method.student.parameters()}
        # The EMA moves only on steps that updated the student (e.g. every 5th for DMD2).
        self.student_groups = {g.name for g in self.groups
                               if any(id(p) in student_ids for p in g.parameters)}
        self.step = 0
        self.ckpt_root = self.run_dir / "checkpoints"
        self.logger: MetricsLogger | None = None

    # ------------------------------------------------------------------ resume

    def resume(self) -> int:
        """Load the newest intact checkpoint, if any; return the step it ends at (0 if none)."""
        acc = self.accelerator
        if acc.is_main_process:
            for message in checkpoint.quarantine_broken(self.ckpt_root):
                acc.print(f"[distill] {message}")
        acc.wait_for_everyone()
        path, _ = checkpoint.latest_valid(self.ckpt_root)
        if path is None:
            return 0
        loaded = checkpoint.load(path, acc.process_index)
        missing, unexpected = self.method.load_state_dict(loaded.model, strict=False)
        saved = set(self.method.checkpoint_state())  # the rest is rebuilt (frozen teacher...)
        missing = [k for k in missing if k in saved]
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {path} does not fit this method: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}. Was the run directory made by another config?")
        if self.ema is not None:
            if loaded.ema is None:
                raise CheckpointError(f"checkpoint {path} has no EMA but train.ema_decay is set")
            self.ema.load_state_dict(loaded.ema, loaded.state["ema_updates"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(loaded.optimizers[name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(loaded.state["schedulers"][name])
        self.stream.load_state_dict(loaded.state["data"])
        self.method.load_extra_state(loaded.state.get("method", {}))
        if loaded.rng is not None:
            checkpoint.set_rng_state(loaded.rng)
        else:
            acc.print(f"[distill] {path} has no RNG state for process {acc.process_index}; "
                      "randomness after resume will differ from an uninterrupted run")
        self.step = loaded.step
        acc.print(f"[distill] resumed from {path} (step {self.step})")
        return self.step

    # ------------------------------------------------------------------ saving

    def save_checkpoint(self) -> Path | None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            checkpoint.staging_dir(self.ckpt_root, self.step)
        acc.wait_for_everyone()
        checkpoint.write_rng(self.ckpt_root / f".tmp-{checkpoint.step_dir_name(self.step)}",
                             acc.process_index)
        acc.wait_for_everyone()
        path = None
        error: Exception | None = None
        if acc.is_main_process:
            state: dict[str, Any] = {
                "step": self.step, "config_hash": self.config_hash,
                "data": self.stream.state_dict(),
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "method": self.method.extra_state(),
                "ema_updates": self.ema.updates if self.ema else 0,
            }
            try:
                path = checkpoint.finalize(
                    self.ckpt_root, self.step, model=self.method.checkpoint_state(),
                    ema=self.ema.state_dict() if self.ema else None,
                    optimizers={k: o.state_dict() for k, o in self.optimizers.items()},
                    state=state, keep=self.cfg.keep_checkpoints)
            except CheckpointError as err:
                error = err
        acc.wait_for_everyone()
        if error is not None:
            raise error
        return path

    def student(self) -> nn.Module:
        """The weights to evaluate and export: the EMA when enabled, else the raw student."""
        return self.ema.shadow if self.ema is not None else self.method.student

    # ------------------------------------------------------------------ training

    def _check_finite(self, losses: dict[str, Tensor], grad_norm: Tensor, group: str) -> None:
        bad = [k for k, v in losses.items() if not torch.isfinite(v).all()]
        if not torch.isfinite(grad_norm):
            bad.append("grad_norm")
        flag = torch.tensor(float(len(bad)), device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, reduction="sum")
        if flag.item() > 0:
            last, _ = checkpoint.latest_valid(self.ckpt_root)
            kept = f"the last good checkpoint {last} is intact" if last else "no checkpoint was written yet"
            what = ", ".join(bad) or "a value on another process"
            raise NonFiniteLossError(
                f"non-finite {what} in parameter group {group!r} at step {self.step}; training "
                f"stopped without saving it ({kept}). Lower train.lr, enable train.clip_grad_norm, "
                "or check the data for extreme values.")

    def _update_group(self, group: ParamGroup, micro: tuple[Batch, ...]) -> dict[str, float]:
        acc, accum = self.accelerator, len(micro)
        self.model.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for i, batch in enumerate(micro):
            sync = nullcontext() if i == accum - 1 else acc.no_sync(self.model)
            with sync:
                losses = self.model(batch, group=group.name, step=self.step)
                total = sum(losses.values())
                acc.backward(total / accum)
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + value.detach().float().item() / accum
        max_norm = self.cfg.clip_grad_norm or float("inf")
        grad_norm = acc.clip_grad_norm_(group.parameters, max_norm)
        grad_norm = torch.as_tensor(grad_norm)
        self._check_finite({k: torch.tensor(v) for k, v in totals.items()}, grad_norm, group.name)
        self.optimizers[group.name].step()
        self.schedulers[group.name].step()
        logs = {f"loss/{group.name}/{k}": v for k, v in totals.items()}
        logs[f"grad_norm/{group.name}"] = float(grad_norm)
        logs[f"lr/{group.name}"] = self.schedulers[group.name].get_last_lr()[0]
        return logs

    def fit(self) -> None:
        """Train from `self.step` to `train.steps`, checkpointing every `checkpoint_every`."""
        cfg, acc = self.cfg, self.accelerator
        if acc.is_main_process:
            self.logger = MetricsLogger(self.run_dir, resume_step=self.step)
        self.model.train()
        window: dict[str, list[float]] = {}
        window_start = time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (cfg.progress and acc.is_main_process),
                   desc=self.run_dir.name[:32], dynamic_ncols=True, unit="step",
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)
        try:
            while self.step < cfg.steps:
                self.method.before_step(self.step)
                batch = self.method.prepare_batch(batch_to(self.stream.next(), acc.device), cfg.grad_accum)
                micro = split_batch(batch, cfg.grad_accum)
                updated, logs = [], {}
                for group in self.groups:
                    if group.is_due(self.step):
                        logs.update(self._update_group(group, micro))
                        updated.append(group.name)
                self.method.after_step(self.step, updated)
                logs.update(self.method.step_logs())
                if self.ema is not None and self.student_groups.intersection(updated):
                    self.ema.update(self.method.student)
                self.step += 1
                bar.update(1)
                for key, value in logs.items():
                    window.setdefault(key, []).append(value)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    elapsed = time.perf_counter() - window_start
                    values = {k: sum(v) / len(v) for k, v in window.items()}
                    values["steps_per_sec"] = len(next(iter(window.values()), [0])) / max(elapsed, 1e-9)
                    if self.logger is not None:
                        self.logger.log(self.step, values)
                    loss_keys = [k for k in values if k.startswith("loss/")]
                    bar.set_postfix({k.split("/", 1)[1]: f"{values[k]:.4g}" for k in loss_keys[:3]},
                                    refresh=False)
                    window, window_start = {}, time.perf_counter()
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            if self.logger is not None:
                self.logger.close()
