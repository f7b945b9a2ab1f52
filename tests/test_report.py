"""Report: teacher matching, table formatting and the self-contained HTML page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from distill.report import comparison_rows, format_table, write_report
from distill.report.plots import loss_curves, metric_vs_nfe, scatter_grid

PNG = b"\x89PNG"


def _eval(teacher_swd, teacher_ms, student_swd, student_ms=1.0, nfes=None) -> dict:
    nfes = nfes or [2**i for i in range(len(teacher_swd))]
    rows = [
        {"model": "teacher", "sampler": "euler", "nfe": n, "swd": s, "mmd": s / 10,
         "energy": s / 2, "ms_per_sample": ms}
        for n, s, ms in zip(nfes, teacher_swd, teacher_ms, strict=True)
    ]
    rows.append({"model": "student", "sampler": "euler", "nfe": 1, "swd": student_swd,
                 "mmd": student_swd / 10, "energy": student_swd / 2, "ms_per_sample": student_ms})
    return {"run": "fake-run", "dataset": "moons", "primary_metric": "swd",
            "metrics": ["swd", "mmd", "energy"], "n_samples": 512, "rows": rows}


def test_matches_cheapest_teacher_at_equal_quality():
    data = _eval([1.3, 0.4, 0.12, 0.09], [1.0, 2.0, 4.0, 8.0], 0.1)
    (row,) = comparison_rows(data)
    assert row["model"] == "student" and row["match_nfe"] == 8
    assert row["speedup"] == pytest.approx(8.0)
    assert row["speedup_lower_bound"] is False
    assert row["ratio_to_best_baseline"] == pytest.approx(0.1 / 0.09)


def test_equal_quality_counts_as_match_and_cost_breaks_ties():
    data = _eval([1.3, 0.1, 0.1, 0.09], [1.0, 2.0, 4.0, 8.0], 0.1, student_ms=0.5)
    (row,) = comparison_rows(data)
    assert row["match_nfe"] == 2 and row["speedup"] == pytest.approx(4.0)


def test_lower_bound_when_student_beats_every_teacher_row():
    data = _eval([1.3, 0.4, 0.12, 0.09], [1.0, 2.0, 4.0, 8.0], 0.05, student_ms=2.0)
    (row,) = comparison_rows(data)
    assert row["match_nfe"] is None and row["speedup_lower_bound"] is True
    assert row["speedup"] == pytest.approx(4.0)  # best teacher (nfe 8, 8 ms) / 2 ms
    table = format_table(data)
    assert table[-1][-2] == "≥ 4.0×"


def test_other_metric_and_higher_is_better():
    data = _eval([1.3, 0.4, 0.12, 0.09], [1.0, 2.0, 4.0, 8.0], 0.1)
    for row, cov in zip(data["rows"], [0.25, 0.5, 0.75, 1.0, 0.75], strict=True):
        row["mode_coverage"] = cov
    (row,) = comparison_rows(data, metric="mode_coverage")
    assert row["match_nfe"] == 4 and row["speedup"] == pytest.approx(4.0)
    (row,) = comparison_rows(data, metric="mmd")
    assert row["match_nfe"] == 8


def test_format_table_shape_and_rounding():
    data = _eval([1.3, 0.4, 0.12345678, 0.09], [1.0, 2.0, 4.0, 8.0], 0.1)
    header, *body = format_table(data)
    assert header[:3] == ["model", "sampler", "NFE"] and "SWD" in header
    assert len(body) == 5 and all(len(r) == len(header) for r in body)
    assert [r[0] for r in body] == ["teacher"] * 4 + ["student"]
    assert body[2][3] == "0.1235" and body[2][6] == "4.000"
    assert body[-1][-3:] == ["8", "8.0×", "1.11"]


def _fake_run(run_dir: Path, with_eval=True, with_samples=True, with_metrics=True) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"name": "moons-<ode>", "data": {"name": "moons"}, "teacher": {}, "student": {},
              "method": {"name": "ode-pairs"}, "train": {"steps": 200}, "eval": {}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    nfes = [1, 2, 4, 8, 16, 32, 64]
    data = _eval([1.3, 0.6, 0.3, 0.17, 0.12, 0.1, 0.091], [0.01 * n for n in nfes], 0.102,
                 student_ms=0.011, nfes=nfes)
    if with_eval:
        (run_dir / "eval.json").write_text(json.dumps(data))
    if with_samples:
        rng = np.random.default_rng(0)
        save_file({key: rng.normal(size=(300, 2)).astype(np.float32)
                   for key in ["data", "teacher/nfe=1", "teacher/nfe=64", "student/nfe=1"]},
                  str(run_dir / "samples.safetensors"))
    if with_metrics:
        lines = [json.dumps({"step": s, "loss/student/regression": 1.0 / s, "lr/student": 1e-3,
                             "steps_per_sec": 100.0}) for s in range(10, 210, 10)]
        (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n{\"step\": 21")
    return data


def test_write_report_is_self_contained(tmp_path):
    data = _fake_run(tmp_path / "run")
    path = write_report(tmp_path / "run")
    assert path == tmp_path / "run" / "report.html"
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", text)
    assert "http://" not in text and "https://" not in text
    assert text.count("data:image/png;base64,") == len(data["metrics"]) + 2
    assert "moons-&lt;ode&gt;" in text and "ode-pairs" in text and "<ode>" not in text
    assert "0.102" in text and "0.091" in text and "teacher-64" in text
    assert "<details>" in text and "not evaluated" not in text.lower()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".report")] == []


@pytest.mark.parametrize("missing", ["eval", "samples", "metrics", "all"])
def test_write_report_degrades_when_inputs_are_missing(tmp_path, missing):
    run = tmp_path / "run"
    _fake_run(run, with_eval=missing not in ("eval", "all"),
              with_samples=missing not in ("samples", "all"),
              with_metrics=missing not in ("metrics", "all"))
    if missing == "all":
        (run / "config.yaml").unlink()
    text = write_report(run).read_text(encoding="utf-8")
    if missing in ("eval", "all"):
        assert "Not evaluated yet" in text
    if missing in ("samples", "all"):
        assert "samples.safetensors not found" in text
    if missing in ("metrics", "all"):
        assert "metrics.jsonl missing or empty" in text
    assert text.rstrip().endswith("</html>")


def test_plots_return_png_or_none():
    assert loss_curves([]) is None
    assert loss_curves([{"step": 1, "lr/student": 0.1}]) is None
    assert loss_curves([{"step": 1, "loss/a": -0.5}, {"step": 2, "loss/a": 0.2}]).startswith(PNG)
    points = {"data": np.zeros((10, 3)), "student/nfe=1": np.ones((5, 3))}
    assert scatter_grid(points, max_points=4).startswith(PNG)
    assert metric_vs_nfe({"rows": []}, "swd").startswith(PNG)
