"""Distillation losses on logits, for classifiers (B, V) and language models (B, T, V).

Every function takes `student_logits` and `teacher_logits` of shape (..., V) with any number of
leading dims, and returns a loss over the rows (the leading positions):

- `mask`: bool or float tensor of the leading shape (...,). A row counts with weight `mask`
  (bool -> 0/1); rows with weight 0 are never computed, so padding rows may hold anything.
  For the losses that take `labels`, rows whose label is `ignore_index` (-100) are dropped too.
- `reduction`: "mean" = sum_i w_i l_i / sum_i w_i (0 when nothing is selected), "sum" =
  sum_i w_i l_i, "none" = the per-row tensor w_i l_i of the leading shape (0 on dropped rows).

Conventions (p_t = softmax(teacher / T), p_s = softmax(student / T)):

- Forward KL is KL(p_t || p_s) (mean-seeking, the classic KD loss); reverse KL is
  KL(p_s || p_t) (mode-seeking).
- T² scaling: every divergence between tempered distributions (forward_kl, reverse_kl,
  generalized_jsd, skew_forward_kl, skew_reverse_kl, total_variation, dkd) is multiplied by T²,
  as in Hinton et al. 2015 (§2): the soft-target gradients scale as 1/T², so the factor keeps
  their size independent of T. At T = 1 the factor is 1 and values are the plain divergences.
  `pld` and `cprd` are ranking likelihoods, not divergences: there T only sets the teacher's
  confidence weights (pld) or the contrastive temperature of the student scores (cprd), and no
  T² factor is applied.
- Everything is computed in log space (log_softmax, logsumexp, logaddexp). Terms with p = 0
  count as 0 (0 log 0 = 0), so teacher logits of -inf (masked vocabulary entries) give finite
  values and finite gradients. A reverse-direction divergence (reverse_kl, generalized_jsd at
  beta = 1, skew_reverse_kl at alpha = 0) is +inf when the student puts mass where the teacher
  has none; mask such entries with -inf in both logits to drop them from the vocabulary.
- float16 / bfloat16 inputs are computed in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
IGNORE_INDEX = -100

# Student logits of -inf are replaced by (row's finite minimum - _FLOOR_GAP) in the ranking
# losses: exp(-_FLOOR_GAP) is 0 even in float64, so such entries drop out of every normaliser
# while logcumsumexp and its gradient stay finite.
_FLOOR_GAP = 1.0e4

RowFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


# --------------------------------------------------------------------------- validation


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not math.isfinite(t) or t <= 0.0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def _check_unit(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _check_weight(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def _check_count(name: str, value: int | None, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _compute_dtype(student: Tensor, teacher: Tensor) -> torch.dtype:
    dtype = torch.promote_types(student.dtype, teacher.dtype)
    if not dtype.is_floating_point:
        raise ValueError(f"logits must be floating point, got {student.dtype} and {teacher.dtype}")
    return torch.float32 if torch.finfo(dtype).bits < 32 else dtype


# --------------------------------------------------------------------------- row machinery


def _rowwise(
    row_fn: RowFn,
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    mask: Tensor | None,
    reduction: str,
    labels: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Check shapes, flatten to (N, V), run `row_fn` on the selected rows, then reduce."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if student_logits.ndim == 0 or teacher_logits.ndim == 0:
        raise ValueError("logits must have shape (..., V), got a 0-d tensor")
    v_s, v_t = student_logits.shape[-1], teacher_logits.shape[-1]
    if v_s != v_t:
        raise ValueError(
            f"student vocabulary size {v_s} does not match teacher vocabulary size {v_t} "
            f"(student_logits {tuple(student_logits.shape)}, "
            f"teacher_logits {tuple(teacher_logits.shape)})"
        )
    lead = student_logits.shape[:-1]
    if teacher_logits.shape[:-1] != lead:
        raise ValueError(
            f"student and teacher leading shapes differ: {tuple(lead)} vs "
            f"{tuple(teacher_logits.shape[:-1])}"
        )
    dtype = _compute_dtype(student_logits, teacher_logits)
    s = student_logits.to(dtype).reshape(-1, v_s)
    t = teacher_logits.to(dtype).reshape(-1, v_s)
    n = s.shape[0]

    weight: Tensor | None = None
    if mask is not None:
        if mask.shape != lead:
            raise ValueError(
                f"mask must have the leading shape {tuple(lead)} of the logits, "
                f"got {tuple(mask.shape)}"
            )
        weight = mask.reshape(-1).to(device=s.device, dtype=dtype)
    lab: Tensor | None = None
    if labels is not None:
        if labels.shape != lead:
            raise ValueError(
                f"labels must have the leading shape {tuple(lead)} of the logits, "
                f"got {tuple(labels.shape)}"
            )
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
        lab = labels.reshape(-1).to(device=s.device, dtype=torch.long)
        valid = (lab != ignore_index).to(dtype)
        weight = valid if weight is None else weight * valid

    if weight is None:
        rows = row_fn(s, t, lab)
        if reduction == "none":
            return rows.reshape(lead)
        total = rows.sum()
        return total if reduction == "sum" else total / max(n, 1)

    idx = (weight != 0).nonzero().squeeze(-1)
    w = weight[idx]
    rows = row_fn(s[idx], t[idx], None if lab is None else lab[idx]) * w
    if reduction == "none":
        return rows.new_zeros(n).index_copy(0, idx, rows).reshape(lead)
    total = rows.sum()
    if reduction == "sum":
        return total
    denom = w.sum()
    return total / torch.where(denom > 0, denom, torch.ones_like(denom))


def _xlogx_kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Row-wise KL(p || q) = sum_v p_v (log p_v - log q_v) from log-probs; p_v = 0 counts 0.

    Entries outside p's support are zeroed in the inputs (not only in the output), so that
    -inf there gives neither NaN values nor NaN gradients.
    """
    p = log_p.exp()
    if not bool(torch.isneginf(log_p).any() or torch.isneginf(log_q).any()):
        # the usual case (finite logits): nothing to mask, the same values and gradients
        return (p * (log_p - log_q)).sum(-1)
    support = p > 0
    zero = torch.zeros((), dtype=log_p.dtype, device=log_p.device)
    lp = torch.where(support, log_p, zero)
    lq = torch.where(support, log_q, zero)
    return (torch.where(support, p, zero) * (lp - lq)).sum(-1)


def _log_mix(log_a: Tensor, log_b: Tensor, w: float) -> Tensor:
    """log(w * a + (1 - w) * b) from log a and log b; exact a (w = 1) or b (w = 0) at the ends."""
    if w == 1.0:
        return log_a
    if w == 0.0:
        return log_b
    both = torch.isneginf(log_a) & torch.isneginf(log_b)
    if not bool(both.any()):  # the usual case: no entry outside both supports
        return torch.logaddexp(log_a + math.log(w), log_b + math.log1p(-w))
    zero = torch.zeros((), dtype=log_a.dtype, device=log_a.device)
    a = torch.where(both, zero, log_a) + math.log(w)
    b = torch.where(both, zero, log_b) + math.log1p(-w)
    return torch.where(both, torch.full_like(a, -math.inf), torch.logaddexp(a, b))


def _log_probs(logits: Tensor, temperature: float) -> Tensor:
    """log softmax(logits / T) over the last dim (no division pass at T = 1)."""
    return F.log_softmax(logits if temperature == 1.0 else logits / temperature, -1)


def _floor_neginf(x: Tensor) -> Tensor:
    """Replace -inf by (row's finite minimum - _FLOOR_GAP): same softmax, no -inf for autograd."""
    neg = torch.isneginf(x)
    if not bool(neg.any()):
        return x
    finite_min = torch.where(neg, torch.full_like(x, math.inf), x).detach().amin(-1, keepdim=True)
    finite_min = torch.where(torch.isfinite(finite_min), finite_min, torch.zeros_like(finite_min))
    return torch.where(neg, finite_min - _FLOOR_GAP, x)


def _suffix_logsumexp(x: Tensor) -> Tensor:
    """out[..., k] = logsumexp(x[..., k:]) along the last dim."""
    return torch.logcumsumexp(x.flip(-1), dim=-1).flip(-1)


# --------------------------------------------------------------------------- divergences


def forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Forward KL, T² · KL(p_t || p_s), the KD soft-target loss (Hinton et al. 2015, §2).

    KL(p_t || p_s) = sum_v p_t(v) [log p_t(v) - log p_s(v)], p = softmax(logits / T).
    Shapes: logits (..., V), mask (...,); returns a scalar, or (...,) for reduction="none".
    """
    t2 = _check_temperature(temperature)

    def rows(s: Tensor, t: Tensor, _: Tensor | None) -> Tensor:
        return _xlogx_kl(_log_probs(t, t2), _log_probs(s, t2)) * t2**2

    return _rowwise(rows, student_logits, teacher_logits, mask=mask, reduction=reduction)


def reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Reverse KL, T² · KL(p_s || p_t), the mode-seeking objective of MiniLLM (Gu et al. 2024).

    KL(p_s || p_t) = sum_v p_s(v) [log p_s(v) - log p_t(v)], p = softmax(logits / T).
    +inf where the student has mass and the teacher has none (see the module docstring).
    Shapes: logits (..., V), mask (...,); returns a scalar, or (...,) for reduction="none".
    """
    t2 = _check_temperature(temperature)

    def rows(s: Tensor, t: Tensor, _: Tensor | None) -> Tensor:
        return _xlogx_kl(_log_probs(s, t2), _log_probs(t, t2)) * t2**2

    return _rowwise(rows, student_logits, teacher_logits, mask=mask, reduction=reduction)


def generalized_jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024, Eq. 1), times T².

    For 0 < beta < 1, with m = beta · p_t + (1 - beta) · p_s:
        JSD_beta = beta · KL(p_t || m) + (1 - beta) · KL(p_s || m),
    the convention of TRL's `GKDTrainer.generalized_jsd_loss` (there the mixture is built as
    logsumexp(log p_s + log(1 - beta), log p_t + log beta)). The endpoints are special cases,
    exactly as in TRL: beta = 0 returns `forward_kl` (KL(p_t || p_s)) and beta = 1 returns
    `reverse_kl` (KL(p_s || p_t)), bit for bit. The mixture itself vanishes at both ends
    (JSD_beta ≈ beta · KL(p_t || p_s) as beta -> 0 and ≈ (1 - beta) · KL(p_s || p_t) as
    beta -> 1), so it is discontinuous there; beta = 0.5 is the symmetric JSD (at most
    log 2 · T²). TRL applies no T² factor; at T = 1 the two agree.
    Shapes: logits (..., V), mask (...,); returns a scalar, or (...,) for reduction="none".
    """
    b = _check_unit("beta", beta)
    t2 = _check_temperature(temperature)
    if b == 0.0:
        return forward_kl(
            student_logits, teacher_logits, temperature=t2, mask=mask, reduction=reduction
        )
    if b == 1.0:
        return reverse_kl(
            student_logits, teacher_logits, temperature=t2, mask=mask, reduction=reduction
        )

    def rows(s: Tensor, t: Tensor, _: Tensor | None) -> Tensor:
        log_pt, log_ps = _log_probs(t, t2), _log_probs(s, t2)
        log_m = _log_mix(log_pt, log_ps, b)
        jsd = b * _xlogx_kl(log_pt, log_m) + (1.0 - b) * _xlogx_kl(log_ps, log_m)
        return jsd * t2**2

    return _rowwise(rows, student_logits, teacher_logits, mask=mask, reduction=reduction)


def skew_forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    alpha: float = 0.1,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Skew forward KL (alpha-SKL) of DistiLLM (Ko et al. 2024, §3.1), times T².

    SKL_alpha(p_t, p_s) = KL(p_t || alpha · p_t + (1 - alpha) · p_s). alpha = 0 is exactly
    `forward_kl`; alpha = 1 is 0. The paper uses alpha = 0.1. Always finite for alpha > 0.
    Shapes: logits (..., V), mask (...,); returns a scalar, or (...,) for reduction="none".
    """
    a = _check_unit("alpha", alpha)
    t2 = _check_temperature(temperature)

    def rows(s: Tensor, t: Tensor, _: Tensor | None) -> Tensor:
        log_pt, log_ps = _log_probs(t, t2), _log_probs(s, t2)
        return _xlogx_kl(log_pt, _log_mix(log_pt, log_ps, a)) * t2**2

    return _rowwise(rows, student_logits, teacher_logits, mask=mask, reduction=reduction)


def skew_reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    alpha: float = 0.1,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Skew reverse KL (alpha-SRKL) of DistiLLM (Ko et al. 2024, §3.1), times T².

    SRKL_alpha(p_s, p_t) = KL(p_s || alpha · p_s + (1 - alpha) · p_t). alpha = 0 is exactly
    `reverse_kl`; alpha = 1 is 0. The paper uses alpha = 0.1. Finite for alpha > 0 even where
    the teacher has no mass (bounded by -log(alpha) · T²).
    Shapes: logits (..., V), mask (...,); returns a scalar, or (...,) for reduction="none".
    """
    a = _check_unit("alpha", alpha)
    t2 = _check_temperature(temperature)

    def rows(s: Tensor, t: Tensor, _: Tensor | None) -> Tensor:
        log_pt, log_ps = _log_probs(t, t2), _log_probs(s, t2)
        return _xlogx_kl(log_ps, _log_mix(log_ps, log_pt, a)) * t2**2

    return _rowwise(rows, student_logits, teacher_logits, mask=mask, reduction=reduction)


def total_variation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Total variation distance, T² · ½ sum_v |p_t(v) - p_s(v)| (f-DISTILL, Wen et al. 2023).

    In [0, 1] before the T² factor, which is applied for uniformity with the other divergences.
    Shapes: logits (..., V), mask (...,); returns a scalar, or (...,) for reduction="none".
    """
    t2 = _check_temperature(temperature)

    def rows(s: Tensor, t: Tensor, _: Tensor | None) -> Tensor:
        diff = F.softmax(t / t2, -1) - F.softmax(s / t2, -1)
        return 0.5 * diff.abs().sum(-1) * t2**2

    return _rowwise(rows, student_logits, teacher_logits, mask=mask, reduction=reduction)


def adaptive_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    mu: float = 0.5,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Adaptive KL (AKL) of Wu et al. 2024, "Rethinking Kullback-Leibler Divergence in
    Knowledge Distillation for Large Language Models" (§4), times T².

    The head H is the smallest set of the teacher's most probable entries holding at least
    `mu` of its mass; g_head = sum_{v in H} |p_t(v) - p_s(v)|, g_tail = the same over the rest.
    AKL = g_head / (g_head + g_tail) · KL(p_t || p_s) + g_tail / (g_head + g_tail) · KL(p_s || p_t):
    forward KL (which fits the head first) weighs more where the gap sits in the head, reverse
    KL where it sits in the tail. The two weights are treated as constants (no gradient). When
    student and teacher agree (both gaps 0) the weights are 1/2 each.
    Shapes: logits (..., V), mask (...,); returns a scalar, or (...,) for reduction="none".
    """
    m = _check_unit("mu", mu)
    t2 = _check_temperature(temperature)

    def rows(s: Tensor, t: Tensor, _: Tensor | None) -> Tensor:
        log_pt, log_ps = _log_probs(t, t2), _log_probs(s, t2)
        with torch.no_grad():
            pt, ps = log_pt.exp(), log_ps.exp()
            order = pt.argsort(-1, descending=True)
            sorted_pt = pt.gather(-1, order)
            before = sorted_pt.cumsum(-1) - sorted_pt  # mass of the entries ranked above
            in_head = torch.zeros_like(pt, dtype=torch.bool).scatter(-1, order, before < m)
            gap = (pt - ps).abs()
            g_head = torch.where(in_head, gap, torch.zeros_like(gap)).sum(-1)
            g_tail = gap.sum(-1) - g_head
            total = g_head + g_tail
            w_head = torch.where(total > 0, g_head / total.clamp_min(1e-30), torch.full_like(total, 0.5))
        fkl, rkl = _xlogx_kl(log_pt, log_ps), _xlogx_kl(log_ps, log_pt)
        return (w_head * fkl + (1 - w_head) * rkl) * t2**2

    return _rowwise(rows, student_logits, teacher_logits, mask=mask, reduction=reduction)


def dkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    reduction: Reduction = "mean",
) -> Tensor:
    """Decoupled KD (Zhao et al. 2022, "Decoupled Knowledge Distillation", CVPR), times T²:
        DKD = alpha · TCKD + beta · NCKD.

    With y = labels, b = (p(y), 1 - p(y)) the binary target / non-target probabilities and
    p̂ = softmax over the non-target classes (y removed):
        TCKD = KL(b_t || b_s),   NCKD = KL(p̂_t || p̂_s),
    so that forward KL = TCKD + (1 - p_t(y)) · NCKD (the paper's reformulation of KD). alpha and
    beta are weights >= 0, not restricted to [0, 1]; the paper uses alpha = 1, beta = 8
    (CIFAR-100) and T = 4 (here the defaults are alpha = 1, beta = 8, T = 1).
    Computed in log space (no "-1000 on the target" trick). Needs V >= 2.
    Shapes: logits (..., V), labels and mask (...,) (labels == ignore_index drop the row);
    returns a scalar, or (...,) for reduction="none".
    """
    a = _check_weight("alpha", alpha)
    b = _check_weight("beta", beta)
    t2 = _check_temperature(temperature)
    if student_logits.ndim >= 1 and student_logits.shape[-1] < 2:
        raise ValueError(f"dkd needs at least 2 classes, got V={student_logits.shape[-1]}")

    def rows(s: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        assert y is not None
        target = F.one_hot(y, s.shape[-1]).bool()

        def parts(z: Tensor) -> tuple[Tensor, Tensor]:
            z = z / t2
            lse = torch.logsumexp(z, -1, keepdim=True)
            z_nt = z.masked_fill(target, -math.inf)
            log_binary = torch.cat(
                [z.gather(-1, y[:, None]) - lse, torch.logsumexp(z_nt, -1, keepdim=True) - lse], -1
            )
            return log_binary, F.log_softmax(z_nt, -1)

        bin_s, nt_s = parts(s)
        bin_t, nt_t = parts(t)
        return (a * _xlogx_kl(bin_t, bin_s) + b * _xlogx_kl(nt_t, nt_s)) * t2**2

    return _rowwise(
        rows,
        student_logits,
        teacher_logits,
        mask=mask,
        reduction=reduction,
        labels=labels,
        ignore_index=ignore_index,
    )


# --------------------------------------------------------------------------- ranking losses


def pld(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    mask: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    reduction: Reduction = "mean",
) -> Tensor:
    """Plackett-Luce Distillation (Bassam, Zhu & Bian 2025, "PLD: A Choice-Theoretic List-Wise
    Knowledge Distillation", arXiv:2506.12542), a confidence-weighted list-wise ranking loss.

    Teacher-optimal ranking pi: the true label first, then every other class by descending
    teacher logit (without labels: the teacher's ranking alone). The student's logits s are the
    Plackett-Luce worths; rank k costs its negative PL log-likelihood, weighted by the teacher's
    confidence in the class placed there, alpha_k = softmax(teacher / T)[pi_k]:
        L = sum_k alpha_k · (logsumexp_{j >= k} s_{pi_j} - s_{pi_k}).
    The k = 1 term is alpha_1 · CE(s, y), so L subsumes weighted cross-entropy; L is convex in s
    and invariant to s -> s + c. T acts on the teacher weights only; the student logits are not
    tempered and no T² factor is applied. `top_k` keeps only the first k ranks (each still
    normalised over all lower-ranked classes), which bounds the work for large vocabularies.
    What is implemented follows the paper's abstract and summary (teacher-optimal permutation,
    weights from the teacher's softmax); the paper's exact weight temperature is not reproduced.
    Shapes: logits (..., V), labels and mask (...,); returns a scalar, or (...,) for "none".
    """
    t2 = _check_temperature(temperature)
    _check_count("top_k", top_k, 1)

    def rows(s: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        key = t.detach()
        if y is not None:
            key = key.scatter(-1, y[:, None], math.inf)
        order = torch.argsort(key, dim=-1, descending=True, stable=True)
        weights = F.softmax(t / t2, -1).gather(-1, order)
        worth = _floor_neginf(s).gather(-1, order)
        terms = _suffix_logsumexp(worth) - worth
        if top_k is not None:
            terms, weights = terms[:, :top_k], weights[:, :top_k]
        return (weights * terms).sum(-1)

    return _rowwise(
        rows,
        student_logits,
        teacher_logits,
        mask=mask,
        reduction=reduction,
        labels=labels,
        ignore_index=ignore_index,
    )


def cprd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    num_negatives: int = 8,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    reduction: Reduction = "mean",
) -> Tensor:
    """Contrastive Partial Ranking Distillation (Chen et al. 2024, "How to Make Cross Encoder a
    Good Teacher for Efficient Image-Text Retrieval?", arXiv:2407.07479): the student mimics the
    teacher's relative order of the hard negatives only, through a contrastive objective.

    Per row: the hard negatives H are the `num_negatives` highest student scores, excluding the
    positive `labels` if given (the student mines them, as the dual-encoder does in the paper;
    the selection carries no gradient). The teacher orders H: h_1 > ... > h_K by teacher logit.
    Each h_i is then the positive of an InfoNCE term against the hard negatives ranked below it:
        L = 1/(K - 1) · sum_{i < K} -log( exp(s_{h_i} / tau) / sum_{j >= i} exp(s_{h_j} / tau) ),
    with tau = `temperature` on the student scores (the teacher only gives the order, so its
    score scale does not matter, and no T² factor is applied). Easy negatives and the order
    between the positive and the negatives are left to the task loss (e.g. cross-entropy), which
    this term is meant to be added to. The paper's exact K, tau and weighting are not reproduced.
    Shapes: logits (..., V), labels and mask (...,); returns a scalar, or (...,) for "none".
    """
    tau = _check_temperature(temperature)
    _check_count("num_negatives", num_negatives, 2)

    def rows(s: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        available = s.shape[-1] - (0 if y is None else 1)
        k = min(num_negatives, available)
        if k < 2:
            raise ValueError(f"cprd needs at least 2 negatives per row, got {available}")
        score = _floor_neginf(s)
        candidates = score.detach()
        if y is not None:
            candidates = candidates.scatter(-1, y[:, None], -math.inf)
        hard = candidates.topk(k, dim=-1).indices
        by_teacher = torch.argsort(
            t.detach().gather(-1, hard), dim=-1, descending=True, stable=True
        )
        z = score.gather(-1, hard.gather(-1, by_teacher)) / tau
        return (_suffix_logsumexp(z) - z)[:, :-1].mean(-1)

    return _rowwise(
        rows,
        student_logits,
        teacher_logits,
        mask=mask,
        reduction=reduction,
        labels=labels,
        ignore_index=ignore_index,
    )


__all__ = [
    "IGNORE_INDEX",
    "REDUCTIONS",
    "Reduction",
    "cprd",
    "dkd",
    "forward_kl",
    "generalized_jsd",
    "pld",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
    "total_variation",
]


# --------------------------------------------------------------------- by name (configs)

DIVERGENCES: dict[str, Callable[..., Tensor]] = {
    "forward-kl": forward_kl, "reverse-kl": reverse_kl, "jsd": generalized_jsd,
    "skew-forward-kl": skew_forward_kl, "skew-reverse-kl": skew_reverse_kl, "tvd": total_variation,
    "adaptive-kl": adaptive_kl,
}
DivergenceName = Literal["forward-kl", "reverse-kl", "jsd", "skew-forward-kl", "skew-reverse-kl", "tvd",
                         "adaptive-kl"]


def divergence_options(name: str, beta: float) -> dict[str, float]:
    """The keyword a config's `beta` becomes for divergence `name`: jsd's beta, the skew KLs'
    alpha, adaptive KL's head mass mu, nothing for the others."""
    if name == "jsd":
        return {"beta": beta}
    if name.startswith("skew"):
        return {"alpha": beta}
    if name == "adaptive-kl":
        return {"mu": beta}
    return {}
