"""The diffusion part of a run's report: the quality-vs-NFE comparison (distill.report.nfe)
with the data's noise floor, the image metrics' feature network and path straightness."""

from __future__ import annotations

from distill.report.compare import format_estimate, format_metric, metric_label
from distill.report.nfe import nfe_sections


def diffusion_sections(eval_data: dict) -> tuple[str, str]:
    """(summary, comparison section) of a diffusion run's report."""
    meta = f"dataset {eval_data.get('dataset', '?')} · "
    if eval_data.get("n_generated"):
        meta += (f"{eval_data['n_generated']} generated samples per row vs "
                 f"{eval_data.get('n_samples', '?')} reference samples")
    else:
        meta += f"{eval_data.get('n_samples', '?')} samples per row"
    meta += f" · primary metric {metric_label(eval_data.get('primary_metric') or 'swd')}"
    if eval_data.get("feature_net_test_accuracy") is not None:
        meta += (" · image metrics in the features of a classifier with "
                 f"{100 * eval_data['feature_net_test_accuracy']:.1f}% held-out accuracy")
    notes = []
    floor = eval_data.get("floor") or {}
    if floor:
        values = ", ".join(f"{metric_label(k)} {format_estimate(floor, k)}" for k in floor
                           if k in (eval_data.get("metrics") or []))
        if eval_data.get("floor_samples"):
            notes.append(f"data floor ({eval_data['floor_samples']} training images vs the held-out "
                         f"reference, as many as each row scores): {values}. KID is unbiased, FID "
                         "grows as the samples shrink; FID train is FID against the training images "
                         "(it rewards copying them). ≡ teacher NFE: by KID's 95% intervals.")
        else:
            notes.append(f"data floor (training data vs the held-out reference, at this sample size; "
                         f"± half-widths of 95% intervals): {values}; differences below it are "
                         "sampling noise. ≡ teacher NFE: the cheapest teacher NFE not significantly "
                         "worse than the student (intervals overlap, or better).")
    straightness = eval_data.get("straightness") or {}
    if straightness:
        values = ", ".join(f"{name} {format_metric(v)}" for name, v in straightness.items())
        notes.append("path straightness (Liu et al. 2023: variance of the velocity along each 64-step "
                     "Euler path, per dimension; 0 is a straight path that one Euler step follows "
                     f"exactly): {values}.")
    return nfe_sections(eval_data, meta, notes)
