"""Write a run directory's self-contained HTML report (inline CSS, base64 PNG plots)."""

from __future__ import annotations

import json
import os
import tempfile
from html import escape
from pathlib import Path

import numpy as np
import yaml

from distill.errors import CheckpointError
from distill.report import plots
from distill.report.sections import img, note
from distill.task import task_of_eval

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


def _samples_html(run_dir: Path) -> str:
    samples, problem = _read_samples(run_dir / "samples.safetensors")
    if not samples:
        return "<h2>Samples</h2>" + note(problem or "")
    if all(v.ndim == 4 for v in samples.values()):
        return "<h2>Samples</h2>" + img(plots.image_grid(samples), "sample grids")
    body = img(plots.scatter_grid(samples), "sample scatter")
    return "<h2>Samples</h2>" + body


def _training_html(records: list[dict]) -> str:
    if not records:
        return "<h2>Training</h2>" + note("No training metrics: metrics.jsonl missing or empty.")
    png = plots.loss_curves(records)
    last = records[-1]
    meta = f"{len(records)} logged steps, last step {last.get('step', '?')}"
    if isinstance(last.get("steps_per_sec"), int | float):
        meta += f" · {last['steps_per_sec']:.1f} steps/s"
    body = img(png, "loss curves") if png else note("metrics.jsonl logs no loss values.")
    return f'<h2>Training</h2><p class="meta">{escape(meta)}</p>' + body


def _evaluation_html(run_dir: Path, config: dict, eval_data: dict | None,
                     problem: str | None) -> tuple[str, str, bool]:
    """(summary block, evaluation section, whether to show samples), from the task that wrote
    eval.json (else the task of the config's method)."""
    task = task_of_eval(eval_data or {}, config)
    shows_samples = task is None or task.has_samples
    if eval_data is None:
        return "", "<h2>Evaluation</h2>" + note(problem or "Not evaluated yet."), shows_samples
    if task is None:
        return "", "<h2>Evaluation</h2>" + note("eval.json names no family this version knows."), True
    summary, body = task.report_sections(eval_data, run_dir)
    return summary, body, shows_samples


def render_report(run_dir: Path) -> str:
    """The report's HTML text for `run_dir` (see `write_report`)."""
    config, config_text, config_problem = _read_config(run_dir / "config.yaml")
    eval_data, eval_problem = _read_eval(run_dir / "eval.json")
    method = config.get("method")
    method_name = method.get("name") if isinstance(method, dict) else method
    name = str(config.get("name") or (eval_data or {}).get("run") or run_dir.name)

    title = escape(name) + (f' <span class="method">· {escape(str(method_name))}</span>'
                            if method_name else "")
    summary, evaluation, shows_samples = _evaluation_html(run_dir, config, eval_data, eval_problem)
    config_block = "<h2>Config</h2>"
    if config_problem:
        config_block += note(config_problem)
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
        _samples_html(run_dir) if shows_samples else "",
        _training_html(_read_metrics(run_dir / "metrics.jsonl")), config_block,
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
