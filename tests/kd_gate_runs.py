"""Shared by the classifier-KD gates: run a shipped MNIST-1D recipe for a few seeds at gate
length and collect held-out accuracies.

Recipes run as shipped (teacher recipes are trained once per test session and cached under
$DISTILL_CACHE, file-locked across xdist workers) except for `GATE_STEPS` steps: every method
gets the same steps, batch size, learning rate (the best of a sweep for the label-only
baseline), transfer set and seeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from functools import cache
from pathlib import Path

from filelock import FileLock

from distill.config import load_config
from distill.runner import run

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "mnist1d"
SEEDS = (0, 1, 2)
GATE_STEPS = 800  # 1000 until session 9; the gates' docstrings give both lengths


def accuracies(out: Path, recipe: str, *overrides: str, seeds: tuple[int, ...] = SEEDS) -> list[float]:
    """Held-out accuracy (%) of the `recipe` run's exported model for each seed in `seeds`."""
    values = []
    for seed in seeds:
        options = ["train.progress=false", "eval.timing_repeats=0", f"train.seed={seed}",
                   f"train.steps={GATE_STEPS}",
                   f"train.checkpoint_every={GATE_STEPS}", *overrides]
        tag = "-".join([recipe, *(o.replace("=", "") for o in overrides), str(seed)])
        result = run(load_config(CONFIGS / f"{recipe}-mnist1d.yaml", options), out / tag)
        row = {r["model"]: r for r in result.rows}
        values.append(100 * (row.get("student") or row["teacher"])["accuracy"])
    print(f"{recipe} {' '.join(overrides)}: accuracy {statistics.fmean(values):.1f} ± "
          f"{statistics.stdev(values):.1f} over seeds {seeds}: {[round(v, 1) for v in values]}")
    return values


def teacher_accuracy(out: Path, recipe: str) -> float:
    """Held-out accuracy (%) of the teacher row of the `recipe` run `accuracies` made (seed
    SEEDS[0]; its teacher is the same model for every seed)."""
    rows = json.loads((out / f"{recipe}-{SEEDS[0]}" / "eval.json").read_text())["rows"]
    return 100 * {r["model"]: r for r in rows}["teacher"]["accuracy"]


def mean(values: list[float]) -> float:
    return statistics.fmean(values)


def paired_lead(student: list[float], baseline: list[float]) -> tuple[float, float]:
    """(mean, standard error) of the seed-by-seed differences student - baseline (paired: the
    same seed draws the same labels, batches and initial weights for both where they share
    them). A lead is significant when mean > 2 standard errors."""
    diffs = [a - b for a, b in zip(student, baseline, strict=True)]
    return statistics.fmean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5


@cache
def label_only(out: Path) -> float:
    """Mean accuracy of the label-only student (the `supervised` recipe): computed once per test
    session and shared by the gate files (file-locked under $DISTILL_CACHE, keyed by the recipe
    and the gate settings), whichever xdist worker runs them."""
    recipe = CONFIGS / "supervised-mnist1d.yaml"
    key = hashlib.sha256(f"{recipe.read_text()}{SEEDS}{GATE_STEPS}".encode()).hexdigest()[:16]
    path = Path(os.environ["DISTILL_CACHE"]) / "gate-results" / f"label-only-{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            path.write_text(json.dumps(mean(accuracies(out, "supervised"))))
        return json.loads(path.read_text())
