"""Teacher targets for a set of token positions, and the token-level divergences on them.

Two kinds of targets, behind one `chunk(rows)` interface, so the losses never care which:

- `DenseTargets`: the teacher's final hidden states (N, D_t) and output weight (V, D_t); a
  chunk's full teacher logits are computed on demand (never the whole batch's at once).
- `SparseTargets`: the teacher's top-k token ids (N, k) and their log-probabilities at T = 1;
  the rest of the vocabulary is one explicit tail bucket of mass 1 - sum_k p_k. The student's
  distribution is collapsed onto the same k + 1 buckets (its tail = 1 - its mass on the k ids),
  and the divergence is taken between the two (k + 1)-bucket distributions, which is exact for
  the information kept (Sparse KD with a residual bucket; cf. "Sparse Logit Sampling",
  Anshumann et al. 2025, for the bias of plain top-k without it).

Top-k log-probs are stored at temperature 1; tempering a truncated distribution is not defined
by what is stored, so sparse targets require the loss temperature 1 (a ConfigError otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.kd import losses

# Keep the tail bucket's log-mass finite (and its gradient bounded) when the kept ids hold
# (numerically) all of the mass.
_TAIL_FLOOR = 1e-7


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends (Maechler 2012)."""
    x = x.clamp(max=math.log1p(-_TAIL_FLOOR))
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def with_tail(logprobs: Tensor) -> Tensor:
    """(..., k) log-probs of k outcomes -> (..., k + 1) with the remaining mass as the last entry."""
    return torch.cat([logprobs, log1mexp(torch.logsumexp(logprobs, -1, keepdim=True))], -1)


def predicting_hidden_states(model: nn.Module, ids: Tensor) -> Tensor:
    """A causal LM's final hidden states (B, L-1, D) at the positions that predict ids[:, 1:]
    (after the final norm; the output layer is applied chunk by chunk by the callers)."""
    return model.base_model(input_ids=ids).last_hidden_state[:, :-1]


@dataclass
class DenseTargets:
    """Teacher hidden states (N, D_t) and output weight (V, D_t): full logits per chunk."""

    hidden: Tensor
    weight: Tensor

    def chunk(self, rows: Tensor) -> Tensor:
        """Teacher logits (c, V) of the rows `rows` (float32, no gradient)."""
        with torch.no_grad():
            return (self.hidden[rows] @ self.weight.T).float()

    def topk(self, k: int, chunk_size: int = 1024) -> SparseTargets:
        """The top-k ids and T = 1 log-probs of every row, computed chunk by chunk."""
        ids, lps = [], []
        for start in range(0, self.hidden.shape[0], chunk_size):
            rows = torch.arange(start, min(start + chunk_size, self.hidden.shape[0]))
            logp = F.log_softmax(self.chunk(rows), -1)
            top = logp.topk(k, -1)
            ids.append(top.indices)
            lps.append(top.values)
        return SparseTargets(torch.cat(ids), torch.cat(lps))


@dataclass
class SparseTargets:
    """Teacher top-k ids (N, k) int64 and their log-probs (N, k) at T = 1."""

    indices: Tensor
    logprobs: Tensor

    def chunk(self, rows: Tensor) -> SparseTargets:
        return SparseTargets(self.indices[rows].long(), self.logprobs[rows].float())


def interpolated(student: Tensor, teacher: Tensor, t: float) -> Tensor:
    """TAID's intermediate target (Shing et al. 2025, Eq. 3): logits
    (1 - t) · stopgrad(student) + t · teacher; t = 1 is the teacher itself."""
    return teacher if t >= 1.0 else (1.0 - t) * student.detach() + t * teacher


def token_divergence(student_logits: Tensor, target: Tensor | SparseTargets, *, name: str,
                     temperature: float = 1.0, beta: float = 0.5, interpolate: float = 1.0) -> Tensor:
    """Per-row divergence (c,) between the student's logits (c, V) and the teacher's target
    (dense logits (c, V), or sparse top-k with a tail bucket), T² included as in kd.losses.
    `interpolate` < 1 replaces the target by TAID's interpolation with the detached student
    (on the k + 1 buckets for sparse targets)."""
    fn, kwargs = losses.DIVERGENCES[name], losses.divergence_options(name, beta)
    if isinstance(target, SparseTargets):
        if temperature != 1.0:
            raise ValueError("sparse (top-k) teacher targets are stored at temperature 1; set the "
                             "loss temperature to 1 or use the dense live teacher")
        student = with_tail(F.log_softmax(student_logits, -1).gather(-1, target.indices))
        return fn(student, interpolated(student, with_tail(target.logprobs), interpolate),
                  reduction="none", **kwargs)
    return fn(student_logits, interpolated(student_logits, target, interpolate),
              temperature=temperature, reduction="none", **kwargs)
