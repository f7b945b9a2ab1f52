"""Language-model metrics on held-out token blocks, side by side: perplexity of every model,
and for students the per-token KL(teacher || student) and top-1 agreement with the teacher.

Logits are computed a few blocks at a time (never the whole split's (tokens × vocab) logits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def lm_scores(models: dict[str, nn.Module], ids: Tensor, mask: Tensor, *, teacher: str = "teacher",
              batch_rows: int = 8) -> dict[str, dict[str, float]]:
    """{model: {"nll", "perplexity"[, "kl_to_teacher", "top1_agreement"]}} over the target
    positions of blocks `ids` (M, L) with target mask `mask` (M, L) (position 0 never counts).
    KL and agreement are per target token, against the model named `teacher` when present."""
    sums: dict[str, dict[str, float]] = {name: {"nll": 0.0, "kl": 0.0, "agree": 0.0} for name in models}
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
    out = {}
    for name, s in sums.items():
        nll = s["nll"] / max(tokens, 1.0)
        out[name] = {"nll": nll, "perplexity": math.exp(nll)}
        if teacher in models and name != teacher:
            out[name]["kl_to_teacher"] = s["kl"] / max(tokens, 1.0)
            out[name]["top1_agreement"] = s["agree"] / max(tokens, 1.0)
    return out
