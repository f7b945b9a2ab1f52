"""Compare students against the teacher: speed-up at equal quality, and the comparison table."""

from __future__ import annotations

import math
from typing import Any

from distill.task import task_of_eval

# Metrics where a larger value is better; every other metric is lower-is-better.
HIGHER_IS_BETTER = frozenset({"mode_coverage", "coverage", "precision", "recall", "accuracy",
                              "class_accuracy"})

MISSING = "—"  # a cell with no value


def higher_is_better(metric: str) -> bool:
    """True when a larger value of `metric` means better quality."""
    return metric in HIGHER_IS_BETTER


LABELS = {"mmd": "MMD²", "fid_train": "FID train"}


def metric_label(metric: str) -> str:
    """Human label for a metric name: short names upper-cased (`swd` -> `SWD`)."""
    if metric in LABELS:
        return LABELS[metric]
    return metric.upper() if len(metric) <= 4 else metric.replace("_", " ")


def _value(row: dict, metric: str) -> float | None:
    """The row's finite metric value, or None when absent or not a finite number."""
    value = row.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _ms(row: dict) -> float:
    value = _value(row, "ms_per_sample")
    return math.inf if value is None else value


def _nfe(row: dict) -> float:
    value = _value(row, "nfe")
    return math.inf if value is None else value


def interval(row: dict, metric: str) -> tuple[float, float] | None:
    """The row's interval `<metric>_ci` ([low, high], finite), or None when it has none."""
    ci = row.get(f"{metric}_ci")
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return None
    low, high = (_value({"v": v}, "v") for v in ci)
    return None if low is None or high is None else (low, high)


def not_worse(row: dict, other: dict, metric: str) -> bool:
    """`row` is not significantly worse than `other` on `metric`: when both carry intervals,
    the intervals overlap or `row`'s lies on the better side; else its value is at least as
    good."""
    a, b = interval(row, metric), interval(other, metric)
    if a is None or b is None:
        value, reference = _value(row, metric), _value(other, metric)
        return value >= reference if higher_is_better(metric) else value <= reference
    return a[1] >= b[0] if higher_is_better(metric) else a[0] <= b[1]


def best_row(rows: list[dict], metric: str) -> dict | None:
    """The best-quality row for `metric` (ties broken by cost), or None when no row has it."""
    scored = [r for r in rows if _value(r, metric) is not None]
    if not scored:
        return None
    sign = -1.0 if higher_is_better(metric) else 1.0
    return min(scored, key=lambda r: (sign * _value(r, metric), _ms(r), _nfe(r)))


def _speedup(baseline_row: dict, row: dict) -> float | None:
    base_ms, own_ms = _value(baseline_row, "ms_per_sample"), _value(row, "ms_per_sample")
    if base_ms is None or own_ms is None or own_ms <= 0:
        return None
    return base_ms / own_ms


def comparison_rows(
    eval_data: dict, metric: str | None = None, baseline: str = "teacher"
) -> list[dict]:
    """For each non-baseline row, the cheapest baseline row not significantly worse than it
    (`not_worse`: by the rows' intervals where they have them, else by their values).

    Each result holds the row's fields plus `match_nfe` (None when every baseline row is
    significantly worse), `speedup` (matched baseline ms / this row's ms, both timed in the
    run that wrote the rows; measured against the baseline's best row when nothing matches,
    with `speedup_lower_bound` True) and `ratio_to_best_baseline` (this row's metric / the
    best baseline value).
    """
    metric = metric or eval_data.get("primary_metric") or "swd"
    rows: list[dict[str, Any]] = list(eval_data.get("rows") or [])
    base = [r for r in rows if r.get("model") == baseline and _value(r, metric) is not None]
    best = best_row(base, metric)
    best_value = None if best is None else _value(best, metric)

    out = []
    others = [r for r in rows if r.get("model") != baseline]
    for row in sorted(others, key=lambda r: (str(r.get("model")), _nfe(r), _ms(r))):
        result = dict(row)
        result.update(
            metric=metric, match_nfe=None, speedup=None, speedup_lower_bound=False,
            ratio_to_best_baseline=None,
        )
        value = _value(row, metric)
        if value is not None and best is not None:
            matches = [r for r in base if not_worse(r, row, metric)]
            if matches:
                match = min(matches, key=lambda r: (_ms(r), _nfe(r)))
                result["match_nfe"] = match.get("nfe")
                result["speedup"] = _speedup(match, row)
            else:
                result["speedup"] = _speedup(best, row)
                result["speedup_lower_bound"] = True
            if best_value:
                result["ratio_to_best_baseline"] = value / best_value
        out.append(result)
    return out


def format_metric(value: Any) -> str:
    """A metric value to 4 significant digits; a dash when missing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return MISSING
    return f"{value:.4g}"


def format_estimate(row: dict, metric: str) -> str:
    """The row's metric value, with ± the half-width of its interval when it has one."""
    ci = interval(row, metric)
    text = format_metric(row.get(metric))
    return text if ci is None or text == MISSING else f"{text}±{(ci[1] - ci[0]) / 2:.2g}"


def format_ms(value: Any) -> str:
    """Milliseconds with 3 decimals; a dash when missing."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return MISSING
    return f"{value:.3f}"


def format_speedup(speedup: float | None, lower_bound: bool = False) -> str:
    """`52.1×`, or `≥ 64.0×` when the speed-up is only a lower bound; a dash when unknown."""
    if speedup is None or not math.isfinite(speedup):
        return MISSING
    if speedup < 1:
        text = f"{speedup:.2g}×"
    else:
        text = f"{speedup:,.1f}×" if speedup < 1000 else f"{speedup:,.0f}×"
    return f"≥ {text}" if lower_bound else text


def _sort_key(row: dict) -> tuple:
    return (str(row.get("model")), str(row.get("sampler", "")), _nfe(row), _ms(row))


def format_table(eval_data: dict) -> list[list[str]]:
    """The comparison table of an eval.json as strings (a header row, then the rows), laid out
    by the task that wrote it (`Task.table`)."""
    task = task_of_eval(eval_data)
    return nfe_table(eval_data) if task is None else task.table(eval_data)


def nfe_table(
    eval_data: dict, rows: list[dict] | None = None, baseline: str = "teacher"
) -> list[list[str]]:
    """The quality-vs-cost table: a header row, the baseline rows, then the other rows, each at
    its sampler and NFE, with the speed-up over the baseline at equal quality.

    `rows` are comparison rows (default: `comparison_rows(eval_data)`); the speed-up columns
    refer to the primary metric.
    """
    metric = eval_data.get("primary_metric") or "swd"
    metrics = list(eval_data.get("metrics") or [metric])
    if rows is None:
        rows = comparison_rows(eval_data, metric, baseline)
    label = metric_label(metric)
    header = ["model", "sampler", "NFE", *(metric_label(m) for m in metrics), "ms / sample",
              f"{baseline} NFE at equal {label}", "speed-up", f"{label} ÷ best {baseline}"]
    table = [header]

    def cells(row: dict) -> list[str]:
        nfe = row.get("nfe")
        return [str(row.get("model", MISSING)), str(row.get("sampler", MISSING)),
                MISSING if nfe is None else str(nfe),
                *(format_estimate(row, m) for m in metrics),
                format_ms(row.get("ms_per_sample"))]

    base_rows = [r for r in eval_data.get("rows") or [] if r.get("model") == baseline]
    for row in sorted(base_rows, key=_sort_key):
        table.append([*cells(row), MISSING, MISSING, MISSING])
    for row in rows:
        match = row.get("match_nfe")
        if match is None:
            match_text = "none (better than all)" if row.get("speedup_lower_bound") else MISSING
        else:
            match_text = str(match)
        ratio = row.get("ratio_to_best_baseline")
        table.append([
            *cells(row), match_text,
            format_speedup(row.get("speedup"), bool(row.get("speedup_lower_bound"))),
            MISSING if ratio is None else f"{ratio:.3g}",
        ])
    return table




def percent(value: Any) -> str:
    """A fraction as a percentage with one decimal, or the missing mark."""
    return MISSING if _value({"v": value}, "v") is None else f"{100 * value:.1f}%"
