"""Small classifier backbones for knowledge distillation: an MLP, a 1-D CNN (MNIST-1D) and a
2-D CNN (digits). Each maps x: (B, *shape) -> logits (B, K).

Layers carry stable names (`blocks.0`, `blocks.1`, ..., `head`) so that feature distillation
can hook them by module path without rewriting the model.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from distill.errors import ConfigError
from distill.registry import MODELS


class DualHeadConfig(BaseModel):
    """A second linear head beside the label head, mixed at inference (DHO):
    p = (1 - alpha) softmax(z_label) + alpha softmax(z_distill / beta)."""

    model_config = ConfigDict(extra="forbid")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation head's prediction")
    beta: float = Field(1.0, gt=0, description="temperature of the distillation head at inference")


class ClassifierConfig(BaseModel):
    """A registered classifier backbone: `build(shape, num_classes)` returns a module mapping
    (B, *shape) -> (B, num_classes) logits."""

    model_config = ConfigDict(extra="forbid")

    name: str
    init: Literal["random"] = "random"
    dual_head: DualHeadConfig | None = Field(
        None, description="set by method dho: a distillation head beside the label head")
    exits: list[int] = Field(default_factory=list, description=(
        "early exits: a linear head after each of these blocks (0-based; method hsd sets them)"))
    use_exit: int | None = Field(None, description=(
        "the exit whose logits forward() returns (one of exits; None: the final head); the "
        "blocks after it are skipped"))
    subclasses: int = Field(1, ge=1, description=(
        "logits per class (method lelp sets it): the head predicts classes x subclasses and "
        "forward() returns each class's logsumexp over its subclasses"))

    @model_validator(mode="after")
    def _check_exits(self) -> ClassifierConfig:
        if self.use_exit is not None and self.use_exit not in self.exits:
            raise ValueError(f"use_exit {self.use_exit} is not one of exits {self.exits}")
        if sum([bool(self.exits), self.dual_head is not None, self.subclasses > 1]) > 1:
            raise ValueError("a classifier has at most one of: early exits, a dual head, subclasses")
        return self

    def build(self, shape: tuple[int, ...], num_classes: int) -> nn.Module:
        raise NotImplementedError

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise ConfigError if this backbone cannot take samples of `shape`."""

    def make_classifier(self, shape: tuple[int, ...], num_classes: int) -> nn.Module:
        self.check_shape(shape)
        if self.subclasses > 1:
            inner = self.build(shape, num_classes * self.subclasses)
            return SubclassClassifier(inner.blocks, inner.head, num_classes, self.subclasses)
        model = self.build(shape, num_classes)
        if self.dual_head is not None:
            model = DualHeadClassifier(model.blocks, model.head, self.dual_head.alpha, self.dual_head.beta)
        if self.exits:
            if max(self.exits) >= len(model.blocks) - 1 or min(self.exits) < 0:
                raise ConfigError(f"student.exits {self.exits}: this {self.name} has blocks 0.."
                                  f"{len(model.blocks) - 1}; an exit must follow one of blocks 0.."
                                  f"{len(model.blocks) - 2} (the last block feeds the final head)")
            model = MultiExitClassifier(model.blocks, model.head, self.exits, shape, self.use_exit)
        return model


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Classifier(nn.Module):
    """`blocks` (feature extractors, each hookable by path) then a flatten and a linear `head`."""

    def __init__(self, blocks: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(x).flatten(1))


class DualHeadClassifier(Classifier):
    """Shared `blocks`, a label head `head` and a distillation head `distill_head` of the same
    shape (Dual-Head Optimization, Kang et al. 2025). `forward` returns the log of the mixed
    prediction (1 - alpha) softmax(z_label) + alpha softmax(z_distill / beta), so argmax,
    softmax and every metric read it as logits; `heads` returns both raw logits for training."""

    def __init__(self, blocks: nn.Module, head: nn.Linear, alpha: float, beta: float) -> None:
        super().__init__(list(blocks), head)
        self.distill_head = nn.Linear(head.in_features, head.out_features)
        self.alpha, self.beta = alpha, beta

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(z_label, z_distill), each (B, K)."""
        features = self.blocks(x).flatten(1)
        return self.head(features), self.distill_head(features)

    def forward(self, x: Tensor) -> Tensor:
        label, distill = self.heads(x)
        mixed = torch.stack([torch.log_softmax(label, -1) + math.log1p(-self.alpha + 1e-12),
                             torch.log_softmax(distill / self.beta, -1) + math.log(self.alpha + 1e-12)])
        return torch.logsumexp(mixed, dim=0)


class SubclassClassifier(Classifier):
    """A classifier whose head predicts `subclasses` logits per class (subclass distillation,
    Müller et al. 2020; LELP's pseudo-subclasses). `subclass_logits` returns them as
    (B, K, S); `forward` returns the class logits logsumexp_s z[:, k, s], (B, K), so the
    class probabilities are the sums of the subclass probabilities."""

    def __init__(self, blocks: nn.Module, head: nn.Linear, num_classes: int, subclasses: int) -> None:
        super().__init__(list(blocks), head)
        self.num_classes, self.subclasses = num_classes, subclasses

    def subclass_logits(self, x: Tensor) -> Tensor:
        return super().forward(x).view(len(x), self.num_classes, self.subclasses)

    def forward(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self.subclass_logits(x), dim=-1)


class MultiExitClassifier(Classifier):
    """A classifier with early exits: after each block index in `exits`, a linear head on the
    flattened block output (`exit_heads["i"]`). `forward` returns the logits of `use_exit`
    (running only the blocks up to it) or of the final head; `exit_logits` returns every
    exit's logits and the final ones, deepest last."""

    def __init__(self, blocks: nn.Module, head: nn.Linear, exits: list[int], shape: tuple[int, ...],
                 use_exit: int | None = None) -> None:
        super().__init__(list(blocks), head)
        self.exits, self.use_exit = sorted(exits), use_exit
        with torch.no_grad():
            x, widths = torch.zeros(1, *shape), {}
            for i, block in enumerate(self.blocks):
                x = block(x)
                widths[i] = x[0].numel()
        self.exit_heads = nn.ModuleDict({str(i): nn.Linear(widths[i], head.out_features) for i in self.exits})

    def exit_logits(self, x: Tensor) -> list[Tensor]:
        """[(B, K) per exit in order, then the final (B, K)]."""
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if str(i) in self.exit_heads:
                out.append(self.exit_heads[str(i)](x.flatten(1)))
        return [*out, self.head(x.flatten(1))]

    def forward(self, x: Tensor) -> Tensor:
        if self.use_exit is None:
            return super().forward(x)
        for block in self.blocks[: self.use_exit + 1]:
            x = block(x)
        return self.exit_heads[str(self.use_exit)](x.flatten(1))


@MODELS.register("mlp-classifier", summary="MLP classifier on flattened inputs (any shape)")
class MLPClassifierConfig(ClassifierConfig):
    name: Literal["mlp-classifier"] = "mlp-classifier"
    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)

    def build(self, shape: tuple[int, ...], num_classes: int) -> nn.Module:
        width, blocks = math.prod(shape), [nn.Flatten()]
        for h in self.hidden:
            blocks.append(nn.Sequential(nn.Linear(width, h), nn.ReLU()))
            width = h
        return Classifier(blocks, nn.Linear(width, num_classes))


def _conv_length(length: int, kernel: int, stride: int) -> int:
    return (length + 2 * (kernel // 2) - kernel) // stride + 1


@MODELS.register("cnn1d", summary="1-D CNN classifier for signals of shape (C, L), e.g. MNIST-1D")
class CNN1DConfig(ClassifierConfig):
    """One convolution per entry of `strides` (kernel 5 then 3, ReLU) with `channels` each,
    then a linear head on the flattened features. The default (strides 2, 2, 1: length 40 ->
    10) is the size of MNIST-1D's reference CNN (~31k parameters at 64 channels)."""

    name: Literal["cnn1d"] = "cnn1d"
    channels: int = Field(64, gt=0)
    strides: list[int] = Field(default_factory=lambda: [2, 2, 1], min_length=1)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 2:
            raise ConfigError(f"student/teacher cnn1d takes samples of shape (channels, length); "
                              f"this data has shape {shape}. Use mlp-classifier (any shape) or "
                              "cnn2d (images)")

    def build(self, shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels, length = shape
        blocks: list[nn.Module] = []
        for i, stride in enumerate(self.strides):
            kernel = 5 if i == 0 else 3
            blocks.append(nn.Sequential(nn.Conv1d(channels, self.channels, kernel, stride, kernel // 2),
                                        nn.ReLU()))
            channels, length = self.channels, _conv_length(length, kernel, stride)
        return Classifier(blocks, nn.Linear(channels * length, num_classes))


@MODELS.register("cnn2d", summary="2-D CNN classifier for images of shape (C, H, W), e.g. digits")
class CNN2DConfig(ClassifierConfig):
    """`layers` 3x3 convolutions (ReLU; stride 2 from the second on), then a linear head."""

    name: Literal["cnn2d"] = "cnn2d"
    channels: int = Field(32, gt=0)
    layers: int = Field(3, gt=0)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 3:
            raise ConfigError(f"cnn2d takes images of shape (C, H, W); this data has shape {shape}. "
                              "Use mlp-classifier (any shape) or cnn1d (signals)")

    def build(self, shape: tuple[int, ...], num_classes: int) -> nn.Module:
        channels, height, width = shape
        blocks: list[nn.Module] = []
        for i in range(self.layers):
            stride = 1 if i == 0 else 2
            blocks.append(nn.Sequential(nn.Conv2d(channels, self.channels, 3, stride, 1), nn.ReLU()))
            channels = self.channels
            height, width = _conv_length(height, 3, stride), _conv_length(width, 3, stride)
        return Classifier(blocks, nn.Linear(channels * height * width, num_classes))


def classifier_config(value: object, where: str) -> ClassifierConfig:
    """A registered classifier backbone config from a mapping {name: ..., ...} (as in YAML),
    for method options that build a second network (an online peer, say)."""
    if isinstance(value, ClassifierConfig):
        return value
    if not isinstance(value, dict) or "name" not in value:
        raise ValueError(f"{where} must be a mapping with a classifier name, e.g. "
                         "{name: cnn1d, channels: 64}")
    names = [n for n in MODELS.names() if issubclass(MODELS.get(n), ClassifierConfig)]
    if value["name"] not in names:
        raise ValueError(f"{where}.name {value['name']!r} is not a classifier backbone; "
                         f"choose one of {names}")
    return MODELS.get(value["name"]).model_validate(value)
