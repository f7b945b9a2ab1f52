"""The fake score of distribution-matching methods: a denoiser trained online on the
generator's samples, started from the teacher. Either a full trainable copy of the teacher
(DMD, DMD2, SiD) or a LoRA on it (SwiftBrush), made with peft on a structural copy of the
teacher's network whose frozen weights are the teacher's own tensors: one frozen copy of the
teacher in memory, plus the low-rank adapters."""

from __future__ import annotations

import copy
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from distill.diffusion.denoiser import Denoiser
from distill.errors import ConfigError

LORA_LAYERS = (nn.Linear, nn.Conv2d, nn.Conv1d)


class FakeScoreConfig(BaseModel):
    """How the fake score is built from the teacher."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["copy", "lora"] = Field("copy", description=(
        "copy: a full trainable copy of the teacher; lora: low-rank adapters (peft) on the "
        "teacher's frozen weights, shared with the teacher (SwiftBrush)"))
    rank: int = Field(16, ge=1, description="LoRA rank r")
    alpha: float | None = Field(None, gt=0, description="LoRA alpha (scale alpha / r); default: r")
    targets: list[str] | Literal["auto"] = Field("auto", description=(
        "module paths in the teacher's network that get adapters (exact names, as "
        "net.named_modules() prints them); auto: every Linear / Conv layer"))


def lora_target_names(net: nn.Module, targets: list[str] | Literal["auto"]) -> list[str]:
    """Module paths of `net` that get LoRA adapters; a ConfigError that lists the adaptable
    module paths when a named target does not exist or is not a Linear / Conv layer."""
    layers = {name: m for name, m in net.named_modules() if isinstance(m, LORA_LAYERS)}
    if targets == "auto":
        if not layers:
            raise ConfigError("method.fake_score.targets: auto found no Linear / Conv layer in the teacher's network")
        return list(layers)
    modules = dict(net.named_modules())
    wrong = [name for name in targets if not isinstance(modules.get(name), LORA_LAYERS)]
    if wrong:
        listed = ", ".join(list(layers)[:60]) + (" ..." if len(layers) > 60 else "")
        raise ConfigError(f"method.fake_score.targets: {wrong} are not Linear / Conv layers of the "
                          f"teacher's network; adaptable module paths: {listed}")
    return list(targets)


def shared_weight_copy(module: nn.Module) -> nn.Module:
    """A structural copy of `module` whose parameters and buffers are the original's own
    tensors (no extra weight memory); adapters injected into it leave the original untouched."""
    memo = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return copy.deepcopy(module, memo)


def build_fake_score(teacher: Denoiser, cfg: FakeScoreConfig) -> Denoiser:
    """The trainable fake score, initialised to the teacher (LoRA's B starts at zero, so the
    adapted network equals the teacher at step 0)."""
    if cfg.kind == "copy":
        return copy.deepcopy(teacher).train().requires_grad_(True)
    from peft import LoraConfig, inject_adapter_in_model  # ~5 s of imports: only when asked for

    fake = shared_weight_copy(teacher).requires_grad_(False)
    names = lora_target_names(fake.net, cfg.targets)
    # one regex of the exact paths: peft matches a list's names against path endings too
    exact = "|".join(re.escape(name) for name in names)
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha or cfg.rank, target_modules=f"^(?:{exact})$",
                      lora_dropout=0.0, bias="none")
    inject_adapter_in_model(lora, fake.net)
    for name, param in fake.named_parameters():
        param.requires_grad_("lora_" in name)
    return fake.train()

