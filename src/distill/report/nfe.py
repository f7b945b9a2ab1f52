"""The quality-vs-NFE part of a report, for every family whose students sample in steps: one
sentence per student (speed-up over the teacher at equal quality), the table and one plot per
metric against the number of function evaluations."""

from __future__ import annotations

from html import escape
from typing import Any

from distill.report import plots
from distill.report.compare import (
    best_row,
    comparison_rows,
    format_metric,
    format_speedup,
    metric_label,
    nfe_table,
)
from distill.report.sections import BASELINE, img, note, summary_list, table_html


def _steps(nfe: Any) -> str:
    return f"{nfe} step{'' if nfe == 1 else 's'}"


def summary_sentences(eval_data: dict, baseline: str = BASELINE) -> list[str]:
    """One plain-text sentence per non-baseline row, on the primary metric."""
    metric = eval_data.get("primary_metric") or "swd"
    label = metric_label(metric)
    base = [r for r in eval_data.get("rows") or [] if r.get("model") == baseline]
    best = best_row(base, metric)
    sentences = []
    for row in comparison_rows(eval_data, metric, baseline):
        text = f"{row.get('model')} at {_steps(row.get('nfe'))}: {label} "
        text += format_metric(row.get(metric))
        if best is None:
            sentences.append(text + f" (no {baseline} rows to compare with).")
            continue
        text += f" vs {baseline}-{best.get('nfe')} {format_metric(best[metric])}"
        speedup = row.get("speedup")
        if speedup is None:
            sentences.append(text + ".")
        elif row.get("speedup_lower_bound"):
            sentences.append(text + f"; better than every {baseline} setting, and "
                             f"{format_speedup(speedup)} faster than {baseline}-{best.get('nfe')}.")
        elif speedup >= 1:
            sentences.append(text + f"; {format_speedup(speedup)} faster than the {baseline} at "
                             f"equal quality ({baseline}-{row['match_nfe']}).")
        else:
            sentences.append(text + f"; {format_speedup(1 / speedup)} slower than the {baseline} "
                             f"at equal quality ({baseline}-{row['match_nfe']}).")
    return sentences


def nfe_sections(eval_data: dict, meta: str, notes: list[str]) -> tuple[str, str]:
    """(summary, comparison section): the meta line, the table, the `notes` (plain text, one
    paragraph each) and the quality-vs-NFE plots."""
    parts = ["<h2>Comparison</h2>", f'<p class="meta">{escape(meta)}</p>']
    parts.append(table_html(nfe_table(eval_data)) if eval_data["rows"] else note("eval.json has no rows."))
    parts += [f'<p class="meta">{escape(text)}</p>' for text in notes]
    metrics = list(eval_data.get("metrics") or [eval_data.get("primary_metric") or "swd"])
    figures = [img(plots.metric_vs_nfe(eval_data, m, BASELINE), f"{m} vs NFE") for m in metrics]
    parts += ["<h2>Quality vs function evaluations</h2>",
              '<div class="grid">' + "".join(figures) + "</div>"]
    return summary_list(summary_sentences(eval_data)), "".join(parts)
