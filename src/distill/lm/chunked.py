"""A vocabulary loss that never materialises the (tokens × vocab) logits of a whole batch.

`chunked_vocab_loss(hidden, weight, row_loss, row_weights)` computes
    sum_i w_i · row_loss(hidden_i @ weight.T)_i
over row chunks: each chunk's logits (c × V) exist only while that chunk's loss and its
gradients with respect to the chunk's hidden states and the output weight are computed, in the
forward pass; backward only scales the stored gradients. Peak extra memory is one chunk's
logits and their softmax intermediates plus one (V, D) gradient, instead of the batch's logits,
log-probs and their gradients. This is the fused-linear approach of Liger-Kernel's
cross-entropy/distillation losses (Hsu et al. 2024), here in plain PyTorch and generic over the
row loss: any divergence of `distill.kd.losses`, cross-entropy, or a sum of them.

Rows with weight 0 are dropped before any logit is computed. The fused forward also returns
each named term's detached total (`parts`) for logging.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# row_loss(student_logits (c, V) float32, rows (c,) indices into the selected rows) -> {term: (c,)}
RowLoss = Callable[[Tensor, Tensor], dict[str, Tensor]]


class _ChunkedVocabLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, row_weights: Tensor, row_loss: RowLoss,
                chunk_size: int, parts: dict[str, Tensor]) -> Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        dtype = torch.promote_types(hidden.dtype, torch.float32)  # bf16/fp16 logits in float32
        total = hidden.new_zeros((), dtype=dtype)
        w = weight.detach().requires_grad_(need_w)  # one leaf; each chunk builds its own graph
        for start in range(0, hidden.shape[0], chunk_size):
            rows = torch.arange(start, min(start + chunk_size, hidden.shape[0]), device=hidden.device)
            with torch.enable_grad():
                h = hidden[start:start + len(rows)].detach().requires_grad_(need_h)
                logits = (h @ w.T).to(dtype)
                scale = row_weights[start:start + len(rows)].to(dtype)
                weighted = {name: (t * scale).sum() for name, t in row_loss(logits, rows).items()}
                loss = sum(weighted.values())
            wanted = [x for x, need in ((h, need_h), (w, need_w)) if need]
            if wanted:
                grads = list(torch.autograd.grad(loss, wanted))
                if need_h:
                    grad_h[start:start + len(rows)] = grads.pop(0).to(grad_h.dtype)
                if need_w:
                    grad_w += grads.pop(0).to(grad_w.dtype)
            total += loss.detach()
            for name, value in weighted.items():
                parts[name] = parts.get(name, 0.0) + value.detach()
        ctx.save_for_backward(grad_h if need_h else None, grad_w if need_w else None)
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return (None if grad_h is None else grad_h * grad_out,
                None if grad_w is None else grad_w * grad_out, None, None, None, None)


def chunked_vocab_loss(hidden: Tensor, weight: Tensor, row_loss: RowLoss, row_weights: Tensor,
                       *, chunk_size: int = 1024) -> tuple[Tensor, dict[str, Tensor]]:
    """(sum_i w_i · Σ_terms row_loss(hidden @ weight.T)_i, {term: its detached weighted sum}).

    hidden: (N, D) the student's final hidden states at the predicting positions (after the
        final norm); weight: (V, D) its output layer (`lm_head.weight`, tied or not);
    row_weights: (N,) per-row weights (0 drops a row: it is never computed);
    row_loss: maps a chunk's logits (float32, or float64 for float64 inputs) (c, V) and the chunk's row indices (c,) into the
        selected rows to named per-row losses (c,).
    Gradients flow to `hidden` and `weight` exactly as through the naive computation.
    """
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden must be (N, D) and weight (V, D) with the same D, got "
                         f"{tuple(hidden.shape)} and {tuple(weight.shape)}")
    if row_weights.shape != hidden.shape[:1]:
        raise ValueError(f"row_weights must be ({hidden.shape[0]},), got {tuple(row_weights.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    keep = (row_weights != 0).nonzero().squeeze(-1)
    parts: dict[str, Tensor] = {}

    def kept_row_loss(logits: Tensor, rows: Tensor) -> dict[str, Tensor]:
        return row_loss(logits, keep[rows])

    total = _ChunkedVocabLoss.apply(hidden[keep], weight, row_weights[keep], kept_row_loss,
                                    chunk_size, parts)
    return total, parts


def naive_vocab_loss(hidden: Tensor, weight: Tensor, row_loss: RowLoss,
                     row_weights: Tensor) -> Tensor:
    """The same loss with the full (N, V) logits (the reference `chunked_vocab_loss` equals)."""
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    logits = (hidden @ weight.T).to(dtype)
    terms = row_loss(logits, torch.arange(hidden.shape[0], device=hidden.device))
    return sum((t * row_weights.to(dtype)).sum() for t in terms.values())
