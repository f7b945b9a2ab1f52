"""Mixtures of experts: K copies of a backbone, each row of a batch routed to one of them by
its time (Phased DMD's per-phase experts, Fan et al. 2025) or by its class (Multi-Student
Distillation, Song et al. 2024)."""

from __future__ import annotations

from torch import Tensor, nn


def expert_index(t: Tensor, experts: int) -> Tensor:
    """Expert of each time (B,) -> (B,) long: k serves t in (1 - (k + 1) / K, 1 - k / K], so
    the K-step uniform grid 1, 1 - 1/K, ... visits experts 0, 1, ..., K - 1 in order."""
    return ((1.0 - t) * experts + 1e-4).floor().long().clamp(0, experts - 1)


def class_expert_index(cond: Tensor, experts: int, num_classes: int) -> Tensor:
    """Expert of each class label (B,) -> (B,) long: the classes split into K contiguous
    groups, class c to expert c K // num_classes; the null class of CFG (= num_classes) goes
    to the last expert."""
    return (cond.long() * experts // num_classes).clamp(0, experts - 1)


class Experts(nn.Module):
    """`net(x, t, cond)` routed per sample to one of `experts`; every expert has the
    backbone's signature and shapes (x: (B, *shape) -> (B, *shape)). Subclasses say how."""

    def __init__(self, experts: list[nn.Module]) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)

    def route(self, t: Tensor, cond: Tensor | None) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        index = self.route(t, cond)
        groups = index.unique().tolist()
        if len(groups) <= 1:  # the common case: one expert for the whole batch
            return self.experts[groups[0] if groups else 0](x, t, cond)
        out = None
        for k in groups:
            rows = index == k
            value = self.experts[k](x[rows], t[rows], None if cond is None else cond[rows])
            if out is None:  # in the experts' dtype (under autocast lower than x's)
                out = value.new_empty(x.shape)
            out[rows] = value
        return out

    def load_single_state(self, state: dict[str, Tensor]) -> None:
        """Start every expert as the same one-network model (a teacher's weights)."""
        for expert in self.experts:
            expert.load_state_dict(state)


class TimeExperts(Experts):
    """Routed by time: expert k serves the k-th of K equal intervals from t = 1 to 0."""

    def route(self, t: Tensor, cond: Tensor | None) -> Tensor:
        return expert_index(t, len(self.experts))


class ClassExperts(Experts):
    """Routed by class label (`class_expert_index`); needs class-conditional experts."""

    def __init__(self, experts: list[nn.Module], num_classes: int) -> None:
        super().__init__(experts)
        self.num_classes = num_classes

    def route(self, t: Tensor, cond: Tensor | None) -> Tensor:
        if cond is None:
            raise ValueError("class experts route by class label: pass labels")
        return class_expert_index(cond, len(self.experts), self.num_classes)
