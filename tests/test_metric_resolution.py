"""The toy primary metric resolves the teacher's step counts: at the evaluation's default
sample size its teacher-4 > 8 > 16 > 64 rows have non-overlapping 95% intervals, on every toy
dataset (8gaussians here; the other five, which train their own teachers, are `slow`). The
numbers: BENCHMARKS.md's metric-resolution section (bench/metric_resolution.py)."""

from __future__ import annotations

import pytest

from conftest import CONFIGS
from distill.config import load_config
from distill.diffusion.evaluate import Generator, evaluate_generators, make_scorer
from distill.report.compare import interval
from distill.teachers import RecipeTeacher

SLOW = ("checkerboard", "moons", "swissroll", "spirals", "rings")


@pytest.mark.gate
@pytest.mark.parametrize("dataset", ["8gaussians", *(pytest.param(d, marks=pytest.mark.slow) for d in SLOW)])
def test_the_primary_metric_orders_the_teachers_step_counts(dataset):
    overrides = [f"data.name={dataset}", f"name=teacher-{dataset}", "eval.timing_repeats=0"]
    cfg = load_config(CONFIGS / "teacher-8gaussians.yaml", overrides)
    teacher, _ = RecipeTeacher(config=CONFIGS / "teacher-8gaussians.yaml", overrides=overrides[:2]).load()
    data = cfg.data.build()
    scorer = make_scorer(data, cfg.eval)
    assert scorer.primary == "mmd" and cfg.eval.n_samples == 40000 and len(scorer.reference) == 40000
    rows, _ = evaluate_generators({"teacher": Generator(teacher, [4, 8, 16, 64])}, data, cfg.eval, scorer)
    ci = {row["nfe"]: interval(row, "mmd") for row in rows}
    for fewer, more in ((4, 8), (8, 16), (16, 64)):
        assert ci[fewer][0] > ci[more][1], (dataset, fewer, ci[fewer], more, ci[more])
