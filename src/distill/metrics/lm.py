"""Language-model metrics on held-out token blocks, side by side: perplexity of every model,
and for students the per-token KL(teacher || student), top-1 agreement with the teacher, and
the student's expected acceptance rate as a speculative-decoding draft of the teacher,
alpha = E[sum_v min(p_t(v), p_s(v))] = 1 - E[TVD] (Leviathan et al. 2023, §3.1; the quantity
DistillSpec optimises), with the expected tokens per teacher call for draft length gamma,
(1 - alpha^(gamma + 1)) / (1 - alpha) (ibid., Eq. 1). Both are teacher-forced on the held-out
text (no sampling), so they are exact for those positions and reproducible.

Logits are computed a few blocks at a time (never the whole split's (tokens × vocab) logits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def block_efficiency(alpha: float, gamma: int) -> float:
    """Expected tokens per teacher call with gamma drafted tokens accepted i.i.d. with
    probability alpha: (1 - alpha^(gamma + 1)) / (1 - alpha) (gamma + 1 at alpha = 1)."""
    return gamma + 1.0 if alpha >= 1.0 else (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


@torch.no_grad()
def lm_scores(models: dict[str, nn.Module], ids: Tensor, mask: Tensor, *, teacher: str = "teacher",
              batch_rows: int = 8) -> dict[str, dict[str, float]]:
    """{model: {"nll", "perplexity"[, "kl_to_teacher", "top1_agreement", "acceptance_rate",
    "block_efficiency_4"]}} over the target
    positions of blocks `ids` (M, L) with target mask `mask` (M, L) (position 0 never counts).
    KL and agreement are per target token, against the model named `teacher` when present."""
    sums: dict[str, dict[str, float]] = {name: {"nll": 0.0, "kl": 0.0, "agree": 0.0, "accept": 0.0}
                                         for name in models}
    tokens = 0.0
    for start in range(0, len(ids), batch_rows):
        x, m = ids[start:start + batch_rows], mask[start:start + batch_rows, 1:]
        target, keep = x[:, 1:], m > 0
        logp = {name: F.log_softmax(model(input_ids=x).logits[:, :-1].float(), -1)[keep]
                for name, model in models.items()}
        labels = target[keep]
        tokens += float(keep.sum())
        for name, lp in logp.items():
            sums[name]["nll"] += float(-lp.gather(-1, labels[:, None]).sum())
            if teacher in logp and name != teacher:
                lt = logp[teacher]
                sums[name]["kl"] += float((lt.exp() * (lt - lp)).sum())
                sums[name]["agree"] += float((lt.argmax(-1) == lp.argmax(-1)).sum())
                sums[name]["accept"] += float(torch.minimum(lt.exp(), lp.exp()).sum())
    out = {}
    for name, s in sums.items():
        nll = s["nll"] / max(tokens, 1.0)
        out[name] = {"nll": nll, "perplexity": math.exp(nll)}
        if teacher in models and name != teacher:
            out[name]["kl_to_teacher"] = s["kl"] / max(tokens, 1.0)
            out[name]["top1_agreement"] = s["agree"] / max(tokens, 1.0)
            alpha = s["accept"] / max(tokens, 1.0)
            out[name]["acceptance_rate"] = alpha
            out[name]["block_efficiency_4"] = block_efficiency(alpha, 4)
    return out
