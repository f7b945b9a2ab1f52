"""Classifier metrics: accuracy, agreement with the teacher, expected calibration error and KL
to the teacher, all on held-out data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.kd.losses import forward_kl


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose argmax is the label. logits (N, K), labels (N,)."""
    return float((logits.argmax(-1) == labels).float().mean())


def agreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Fraction of rows where student and teacher predict the same class (top-1 fidelity,
    Stanton et al. 2021, "Does Knowledge Distillation Really Work?")."""
    return float((student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean())


def expected_calibration_error(logits: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE (Guo et al. 2017, Eq. 3): sum over equal-width confidence bins of
    |bin| / N * |accuracy(bin) - confidence(bin)|."""
    probs = F.softmax(logits.double(), dim=-1)
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(confidence, edges[1:-1], right=True)
    total = torch.zeros((), dtype=torch.float64)
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.double().mean() * (correct[members].mean() - confidence[members].mean()).abs()
    return float(total)


def kl_to_teacher(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Mean KL(p_teacher || p_student) at temperature 1, in nats (float64)."""
    return float(forward_kl(student_logits.double(), teacher_logits.double()))


@torch.inference_mode()
def predict(model: torch.nn.Module, x: Tensor, batch_size: int = 4096) -> Tensor:
    """Logits (N, K) of `model` on x (N, ...), batched, on the model's device, returned on CPU."""
    device = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(x), batch_size)])
