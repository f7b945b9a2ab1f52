"""The backbone of a transition-matching-distilled student (TMD; Nie et al., "Transition Matching
Distillation for Fast Video Generation", 2026): an MLP split into a main trunk and a flow head.

The trunk (the first `depth - head` hidden layers) reads (x_t, t, class) once per call and
gives features m. The flow head (the last `head` hidden layers and the output layer) is a
conditional flow over the prediction itself, y (a velocity for a flow-schedule model): from
y_0 ~ N(0, I) it takes `inner_steps` Euler steps at inner times s_k = k / M of

    ŷ_1 = head(m, y_{s_k}, s_k),   y_{s_{k+1}} = y_{s_k} + (ŷ_1 − y_{s_k}) / (M − k),

(the velocity (ŷ_1 − y_s) / (1 − s) of a rectified inner flow over a step of 1 / M), and returns
the last ŷ_1. So one outer step (one call) samples the transition's target from a distribution
given x_t, in `inner_steps` passes of the head but one of the trunk, where a plain network
returns its mean. The head's first layer is linear in [m, y, emb(s)], so its part on m is
computed once per call and each inner step adds only the part on (y, emb(s)).

Initialised from a plain network (`load_plain_state`), the trunk and head take its layers and
the head's inputs y and s start with zero weights, so the network starts as the plain one for
every y. The inner start noise y_0 is drawn from the global generator in training and from a
generator seeded `INNER_SEED` in evaluation (the same y_0 every call, as the evaluation's
other noise is fixed).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from distill.models.time_embedding import sinusoidal_embedding

INNER_SEED = 0


class FlowHeadMLP(nn.Module):
    """x: (B, *shape), t: (B,), cond: (B,) | None -> (B, *shape), as `TimeMLP`, with a
    `head`-layer flow head run `inner_steps` times per call."""

    def __init__(self, shape: tuple[int, ...], hidden: int, depth: int, time_dim: int, activation: str,
                 num_classes: int | None, time_scale: float, head: int, inner_steps: int) -> None:
        super().__init__()
        if not 1 <= head < depth:
            raise ValueError(f"the flow head takes 1 to depth - 1 = {depth - 1} hidden layers, not {head}")
        self.shape, self.time_dim, self.time_scale = tuple(shape), time_dim, time_scale
        self.head_layers, self.inner_steps, self.two_time, self.policy_components = head, inner_steps, False, 0
        dim = math.prod(shape)
        act = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU}[activation]
        self.class_embedding = nn.Embedding(num_classes + 1, time_dim) if num_classes else None
        trunk: list[nn.Module] = []
        width = dim + time_dim * (2 if num_classes else 1)
        for _ in range(depth - head):
            trunk += [nn.Linear(width, hidden), act()]
            width = hidden
        self.trunk = nn.Sequential(*trunk)
        # the head's first layer, linear in [m, y, emb(s)], as its part on m (computed once per
        # call) and its part on the inner state (y, emb(s)) (every inner step)
        self.head_from_m = nn.Linear(hidden, hidden)
        self.head_from_inner = nn.Linear(dim + time_dim, hidden, bias=False)
        rest: list[nn.Module] = [act()]
        for _ in range(head - 1):
            rest += [nn.Linear(hidden, hidden), act()]
        rest.append(nn.Linear(hidden, dim))
        self.head_rest = nn.Sequential(*rest)

    def embed_time(self, t: Tensor) -> Tensor:
        return sinusoidal_embedding(t, self.time_dim, scale=self.time_scale)

    def features(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        """The trunk's features m: (B, hidden)."""
        parts = [x.flatten(1), self.embed_time(t).to(x.dtype)]
        if self.class_embedding is not None:
            if cond is None:
                raise ValueError("this network is class-conditional: pass class labels")
            parts.append(self.class_embedding(cond).to(x.dtype))
        return self.trunk(torch.cat(parts, dim=1))

    def inner_noise(self, like: Tensor) -> Tensor:
        """y_0 ~ N(0, I): (B, dim), from the global generator in training, else seeded INNER_SEED."""
        if self.training:
            return torch.randn_like(like)
        generator = torch.Generator(device=like.device).manual_seed(INNER_SEED)
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None, s: Tensor | None = None) -> Tensor:
        if s is not None:
            raise ValueError("a flow-head network takes one time")
        m = self.features(x, t, cond)
        y = self.inner_noise(x.flatten(1))
        from_m = self.head_from_m(m)  # once per call: m is fixed
        dim = y.shape[1]
        w_y, w_s = self.head_from_inner.weight[:, :dim], self.head_from_inner.weight[:, dim:]
        ones = y.new_ones(len(y), 1)
        steps = self.inner_steps
        for k in range(steps):
            # s_k is one time for every row: its part is one vector, folded in with y's as
            # from_m + [y, 1] @ [W_y; W_s emb(s_k)]ᵀ (one addmm)
            s_part = w_s @ self.embed_time(torch.full((1,), k / steps, device=x.device)).to(x.dtype)[0]
            first = torch.addmm(from_m, torch.cat([y, ones], dim=1), torch.cat([w_y, s_part[:, None]], dim=1).T)
            predicted = self.head_rest(first)
            y = y + (predicted - y) / (steps - k)
        return predicted.reshape(x.shape)

    def load_plain_state(self, state: dict[str, Tensor]) -> None:
        """Load a plain `TimeMLP`'s weights (same hidden, depth, time and class settings): its
        first depth - head layers into the trunk, the rest into the head, whose first layer's
        weights on y and emb(s) start at zero, so the output is the plain network's for every y."""
        plain = sorted({int(k.split(".")[1]) for k in state if k.startswith("layers.")})
        trunk = [f"trunk.{i}" for i, m in enumerate(self.trunk) if isinstance(m, nn.Linear)]
        rest = [f"head_rest.{i}" for i, m in enumerate(self.head_rest) if isinstance(m, nn.Linear)]
        own = [*trunk, "head_from_m", *rest]
        if len(plain) != len(own):
            raise ValueError(f"a plain network of {len(plain)} linear layers does not split into this "
                             f"trunk ({len(trunk)}) and head ({len(rest) + 1})")
        mapped = {k: v for k, v in state.items() if k.startswith("class_embedding.")}
        for name, index in zip(own, plain, strict=True):
            mapped[f"{name}.weight"], mapped[f"{name}.bias"] = state[f"layers.{index}.weight"], state[f"layers.{index}.bias"]
        mapped["head_from_inner.weight"] = torch.zeros_like(self.head_from_inner.weight)  # y, s unread at first
        self.load_state_dict(mapped)
