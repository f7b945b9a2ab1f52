"""Write a run directory's self-contained HTML report (inline CSS, base64 PNG plots)."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from distill.errors import CheckpointError
from distill.report import plots
from distill.report.compare import (
    best_row,
    comparison_rows,
    format_metric,
    format_speedup,
    format_table,
    metric_label,
)

BASELINE = "teacher"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2937;
  background: #f9fafb; margin: 0; line-height: 1.5; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #fff;
  min-height: 100vh; box-shadow: 0 0 0 1px #e5e7eb; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.1em; }
h1 .method { color: #6b7280; font-weight: 400; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #e5e7eb; padding-bottom: 4px; }
.meta { color: #6b7280; font-size: 0.9em; margin: 0; }
.summary { background: #eff6ff; border-left: 4px solid #2563eb; padding: 10px 16px;
  margin: 18px 0; list-style: none; }
.summary li { margin: 2px 0; }
.note { color: #92400e; background: #fffbeb; border-left: 4px solid #f59e0b;
  padding: 8px 14px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9em; width: 100%; }
th, td { padding: 5px 10px; text-align: right; white-space: nowrap; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
th { background: #f3f4f6; border-bottom: 2px solid #d1d5db; font-weight: 600; }
tbody tr:nth-child(even) { background: #f9fafb; }
tbody tr.other { background: #fff7ed; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 12px; }
img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
details { margin-top: 8px; }
summary { cursor: pointer; color: #2563eb; }
pre { background: #f3f4f6; padding: 12px; overflow-x: auto; font-size: 0.85em; }
footer { color: #9ca3af; font-size: 0.8em; margin-top: 3em; }
"""


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _read_config(path: Path) -> tuple[dict, str | None, str | None]:
    """(parsed config or {}, raw text or None, problem or None)."""
    if not path.is_file():
        return {}, None, "config.yaml not found."
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return {}, text, f"config.yaml could not be parsed: {exc}"
    return (config if isinstance(config, dict) else {}), text, None


def _read_metrics(path: Path) -> list[dict]:
    """Logged records; blank or malformed lines (e.g. a line being written) are skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _read_eval(path: Path) -> tuple[dict | None, str | None]:
    if not path.is_file():
        return None, "Not evaluated yet: eval.json not found."
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"eval.json could not be read: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        return None, "eval.json has no list of rows."
    return data, None


def _read_samples(path: Path) -> tuple[dict[str, np.ndarray], str | None]:
    if not path.is_file():
        return {}, "No samples yet: samples.safetensors not found."
    try:
        from safetensors.numpy import load_file

        samples = load_file(str(path))
    except Exception as exc:  # any unreadable file becomes a note
        return {}, f"samples.safetensors could not be read: {exc}"
    samples = {k: v for k, v in samples.items() if v.ndim >= 1 and len(v) > 0}
    return samples, None if samples else "samples.safetensors holds no samples."


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


def _table_html(eval_data: dict) -> str:
    header, *body = format_table(eval_data, baseline=BASELINE)
    head = "".join(f"<th>{escape(c)}</th>" for c in header)
    lines = []
    for cells in body:
        cls = "" if cells[0] == BASELINE else ' class="other"'
        lines.append(f"<tr{cls}>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(lines)}</tbody></table></div>")


def _evaluation_html(eval_data: dict | None, problem: str | None) -> tuple[str, str]:
    """(summary block, table + metric plots section)."""
    if eval_data is None:
        return "", "<h2>Evaluation</h2>" + _note(problem or "Not evaluated yet.")
    if eval_data.get("family") == "classify":
        return _classifier_html(eval_data)
    if eval_data.get("family") == "lm":
        return _lm_html(eval_data)
    sentences = summary_sentences(eval_data)
    summary = _summary_list(sentences)
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
    parts = ["<h2>Comparison</h2>", f'<p class="meta">{escape(meta)}</p>']
    parts.append(_table_html(eval_data) if eval_data["rows"] else _note("eval.json has no rows."))
    floor = eval_data.get("floor") or {}
    if floor:
        values = ", ".join(f"{metric_label(k)} {format_metric(v)}" for k, v in floor.items()
                           if k in (eval_data.get("metrics") or []))
        if eval_data.get("floor_samples"):
            parts.append(f'<p class="meta">data floor ({eval_data["floor_samples"]} held-out images '
                         f"vs the training images): {escape(values)}. FID grows as the sample "
                         "shrinks, so with fewer held-out images than generated ones this floor "
                         "sits above what a perfect generator would score.</p>")
        else:
            parts.append(f'<p class="meta">data floor (held-out data vs training data): '
                         f"{escape(values)}; differences below it are sampling noise.</p>")
    straightness = eval_data.get("straightness") or {}
    if straightness:
        values = ", ".join(f"{name} {format_metric(v)}" for name, v in straightness.items())
        parts.append(f'<p class="meta">path straightness (Liu et al. 2023: variance of the velocity '
                     f"along each 64-step Euler path, per dimension; 0 is a straight path that one "
                     f"Euler step follows exactly): {escape(values)}.</p>")
    metrics = list(eval_data.get("metrics") or [eval_data.get("primary_metric") or "swd"])
    figures = [_img(plots.metric_vs_nfe(eval_data, m, BASELINE), f"{m} vs NFE") for m in metrics]
    parts += ["<h2>Quality vs function evaluations</h2>",
              '<div class="grid">' + "".join(figures) + "</div>"]
    return summary, "".join(parts)


def _students_with_teacher(eval_data: dict) -> list[tuple[str, dict, dict]]:
    """(name, row, teacher row) for every non-teacher row, when the run has a teacher row."""
    rows = {r.get("model"): r for r in eval_data.get("rows") or []}
    teacher = rows.get("teacher")
    return [] if teacher is None else [(n, r, teacher) for n, r in rows.items() if n != "teacher"]


def classifier_sentences(eval_data: dict) -> list[str]:
    """One sentence per student row: accuracy and size against the teacher."""
    out = []
    for name, row, teacher in _students_with_teacher(eval_data):
        text = (f"{name}: accuracy {100 * row['accuracy']:.1f}% vs teacher "
                f"{100 * teacher['accuracy']:.1f}% with {teacher['parameters'] / row['parameters']:.1f}× "
                f"fewer parameters")
        if "agreement" in row:
            text += f"; agrees with the teacher on {100 * row['agreement']:.1f}% of held-out inputs"
        out.append(text + ".")
    return out


def lm_sentences(eval_data: dict) -> list[str]:
    """One sentence per student row (perplexity, KL and size against the teacher), then the
    teacher-hacking monitor's verdict when the run had one."""
    out = []
    for name, row, teacher in _students_with_teacher(eval_data):
        text = (f"{name}: held-out perplexity {row['perplexity']:.2f} vs teacher "
                f"{teacher['perplexity']:.2f} with {teacher['parameters'] / row['parameters']:.1f}× "
                f"fewer parameters; KL(teacher || {name}) {row['kl_to_teacher']:.3f} nats per token, "
                f"same top-1 token on {100 * row['top1_agreement']:.1f}% of positions; as a "
                f"speculative draft, {100 * row['acceptance_rate']:.1f}% of its tokens accepted")
        if "assisted_acceptance" in row:
            text += (f" (measured in assisted generation, greedy: {100 * row['assisted_acceptance']:.1f}% "
                     f"accepted, {row['assisted_tokens_per_call']:.2f} tokens per teacher call)")
        if row.get("tokens_per_sec") and teacher.get("tokens_per_sec"):
            text += f"; {row['tokens_per_sec'] / teacher['tokens_per_sec']:.1f}× the teacher's tokens/s"
        out.append(text + ".")
    monitor = eval_data.get("teacher_hacking")
    if monitor:
        out.append(("WARNING: " if monitor["hacking"] else "") + monitor["message"] + ".")
    return out


def _summary_list(sentences: list[str]) -> str:
    return ('<ul class="summary">' + "".join(f"<li>{escape(s)}</li>" for s in sentences)
            + "</ul>") if sentences else ""


def _table_section(eval_data: dict, sentences: list[str], meta: str) -> tuple[str, str]:
    """(summary list, comparison table with its meta line) for the families without NFE plots."""
    return _summary_list(sentences), ("<h2>Comparison</h2>" + f'<p class="meta">{escape(meta)}</p>'
                                      + _table_html(eval_data))


def _classifier_html(eval_data: dict) -> tuple[str, str]:
    meta = (f"dataset {eval_data.get('dataset', '?')} · {eval_data.get('n_samples', '?')} held-out "
            "inputs · ECE: expected calibration error, 15 bins · KL: KL(teacher || model), nats")
    return _table_section(eval_data, classifier_sentences(eval_data), meta)


def _lm_html(eval_data: dict) -> tuple[str, str]:
    meta = (f"text {eval_data.get('dataset', '?')} · {eval_data.get('n_tokens', '?')} held-out target "
            "tokens · KL: KL(teacher || model) per token, nats · agreement: same argmax token · "
            "draft acceptance: E[sum min(p_teacher, p_model)], teacher-forced; tokens per teacher "
            "call for 4 drafted tokens: (1 - a^5) / (1 - a)")
    return _table_section(eval_data, lm_sentences(eval_data), meta)


def _samples_html(run_dir: Path) -> str:
    samples, problem = _read_samples(run_dir / "samples.safetensors")
    if not samples:
        return "<h2>Samples</h2>" + _note(problem or "")
    if all(v.ndim == 4 for v in samples.values()):
        return "<h2>Samples</h2>" + _img(plots.image_grid(samples), "sample grids")
    body = _img(plots.scatter_grid(samples), "sample scatter")
    return "<h2>Samples</h2>" + body


def _training_html(records: list[dict]) -> str:
    if not records:
        return "<h2>Training</h2>" + _note("No training metrics: metrics.jsonl missing or empty.")
    png = plots.loss_curves(records)
    last = records[-1]
    meta = f"{len(records)} logged steps, last step {last.get('step', '?')}"
    if isinstance(last.get("steps_per_sec"), int | float):
        meta += f" · {last['steps_per_sec']:.1f} steps/s"
    body = _img(png, "loss curves") if png else _note("metrics.jsonl logs no loss values.")
    return f'<h2>Training</h2><p class="meta">{escape(meta)}</p>' + body


def render_report(run_dir: Path) -> str:
    """The report's HTML text for `run_dir` (see `write_report`)."""
    config, config_text, config_problem = _read_config(run_dir / "config.yaml")
    eval_data, eval_problem = _read_eval(run_dir / "eval.json")
    method = config.get("method")
    method_name = method.get("name") if isinstance(method, dict) else method
    name = str(config.get("name") or (eval_data or {}).get("run") or run_dir.name)

    title = escape(name) + (f' <span class="method">· {escape(str(method_name))}</span>'
                            if method_name else "")
    summary, evaluation = _evaluation_html(eval_data, eval_problem)
    config_block = "<h2>Config</h2>"
    if config_problem:
        config_block += _note(config_problem)
    if config_text is not None:
        config_block += ("<details><summary>resolved config.yaml</summary>"
                         f"<pre>{escape(config_text)}</pre></details>")
    from distill import __version__

    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(name)} · distill report</title><style>{_CSS}</style></head>",
        f"<body><main><h1>{title}</h1>",
        f'<p class="meta">run directory {escape(str(run_dir))}</p>',
        summary, evaluation,
        "" if (eval_data or {}).get("family") in ("classify", "lm") else _samples_html(run_dir),
        _training_html(_read_metrics(
            run_dir / "metrics.jsonl")), config_block,
        f"<footer>generated by distill {escape(__version__)}</footer>",
        "</main></body></html>",
    ])


def write_report(run_dir: Path) -> Path:
    """Write `run_dir/report.html` atomically and return its path; missing inputs become notes."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist; pass the directory a "
                              "training run wrote (it holds config.yaml).")
    text = render_report(run_dir)
    target = run_dir / "report.html"
    fd, tmp = tempfile.mkstemp(prefix=".report.", suffix=".html.tmp", dir=run_dir)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
