"""`distill demo`: the whole product in one command, on a toy 2D teacher.

Trains (or loads from the cache) a flow-matching teacher, distils it with `ode-pairs`
(1 step) and `progressive` (2 steps), and prints one comparison table.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from distill.config import load_config
from distill.errors import ConfigError
from distill.report import comparison_rows
from distill.report.compare import format_estimate, format_metric, format_ms, format_speedup
from distill.runner import run

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "toy2d"
DEMO_METHODS = ("ode-pairs", "progressive")


def demo_configs(dataset: str) -> list[Path]:
    paths = [CONFIGS / f"{method}-{dataset}.yaml" for method in DEMO_METHODS]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"demo configs not found: {', '.join(map(str, missing))} "
                          "(run the demo from a clone of the repository; datasets with demo "
                          "configs: 8gaussians, checkerboard)")
    return paths


def run_demo(out: Path, dataset: str, console: Console) -> list[dict]:
    """Run the demo; return one summary row per (method, student NFE) and the teacher rows."""
    summary: list[dict] = []
    teacher_rows: list[dict] = []
    reports = []
    for path in demo_configs(dataset):
        cfg = load_config(path, ["train.progress=true"])
        console.rule(f"[bold]{cfg.method.name}[/] on {dataset}")
        result = run(cfg, out / cfg.method.name)
        eval_data = json.loads((result.run_dir / "eval.json").read_text())
        teacher_rows = [r for r in eval_data["rows"] if r["model"] == "teacher"]
        floor = eval_data["floor"]
        for row in comparison_rows(eval_data):
            summary.append({"method": cfg.method.name, **row})
        reports.append(result.report)
    table = Table(title=f"distill demo · {dataset} · same noise, same process")
    for column in ("method", "NFE", "MMD² (95% interval)", "SWD", "ms/sample", "≡ teacher NFE", "speed-up"):
        table.add_column(column, justify="left" if column == "method" else "right")
    table.add_row("data vs data (floor)", "—", format_estimate(floor, "mmd"), format_metric(floor["swd"]),
                  "", "", "", style="dim")
    for row in teacher_rows:
        table.add_row("teacher", str(row["nfe"]), format_estimate(row, "mmd"), format_metric(row["swd"]),
                      format_ms(row.get("ms_per_sample")), "", "")
    for row in summary:
        table.add_row(row["method"], str(row["nfe"]), format_estimate(row, "mmd"), format_metric(row["swd"]),
                      format_ms(row.get("ms_per_sample")), str(row["match_nfe"] or "—"),
                      format_speedup(row["speedup"], row["speedup_lower_bound"]), style="bold green")
    console.print(table)
    console.print("≡ teacher NFE: the cheapest teacher NFE whose MMD² is not significantly worse "
                  "than the student's (the 95% intervals overlap, or it is better); speed-up: that "
                  "teacher's time divided by the student's, both timed in the same run.")
    for report in reports:
        console.print(f"report: {report}")
    return summary
