"""Gates: the distilled students beat their baselines on toy 2D data (train + evaluate with
the shipped configs, shortened by SHORT; tens of seconds each, teachers trained once per
session)."""

from __future__ import annotations

import json
import re
import shutil
from functools import cache
from pathlib import Path

import pytest

from conftest import CONFIGS
from distill.config import dump_config, load_config
from distill.report import comparison_rows
from distill.runner import evaluate_run, run

pytestmark = pytest.mark.gate
# The checkerboard variants are `slow` (make test-all): CI runs every toy gate on 8gaussians only.
DATASETS = ["8gaussians", pytest.param("checkerboard", marks=pytest.mark.slow)]


# Shorter than the shipped recipes to keep CI under its time limit (as the digits gates do);
# each gate's docstring gives what its method scores at these settings.
SHORT = {
    "ode-pairs": ["train.steps=1000", "method.pairs=10000", "train.lr=2e-4", "train.ema_decay=0.995",
                  "train.batch_size=256"],
    "progressive": ["train.steps=3000", "train.batch_size=256"],
    "arcflow": ["train.steps=1000", "train.batch_size=256"],  # test_gates_arcflow.py
    "cd": ["train.steps=1000", "train.batch_size=256"],
    "mcd": ["train.steps=1000", "train.batch_size=256"],
    "slam": ["train.steps=1000", "train.batch_size=256"],
    "scm": ["train.steps=600", "train.batch_size=256"],
    "tscd": ["train.steps=1000", "train.batch_size=256"],
    "dmd": ["train.steps=800", "method.pairs=5000"],
    "sid": ["train.steps=800", "train.batch_size=256"],
    "f-distill": ["train.steps=800", "train.batch_size=256"],
    "vsd": ["train.steps=1000", "train.batch_size=256"],
    "dmd2": ["train.batch_size=256"],
    # rectified flow (test_gates_rectified_flow.py; recipe numbers in docs/methods.md)
    "reflow": ["train.steps=1000", "method.pairs=10000", "train.batch_size=256", "train.lr=2e-4",
               "train.ema_decay=0.995"],
    "slimflow": ["train.steps=2000", "method.pairs=10000", "train.batch_size=256"],
    "instaflow": ["train.steps=1000", "method.pairs=10000", "train.batch_size=256"],
    # data-free flow maps (test_gates_flow_map.py)
    "boot": ["train.steps=1000", "train.batch_size=256", "train.lr=2e-4", "train.ema_decay=0.995"],
    "mdt": ["train.steps=1000", "train.batch_size=256"],
    "meanflow": ["train.steps=1500", "train.batch_size=256"],
    "flow-map": ["train.steps=2000", "train.batch_size=256"],
    # distribution-matching variants (test_gates_dmd_variants.py)
    "dmd-phased": ["train.steps=500", "train.batch_size=256"],
    "tdm": ["train.steps=500", "train.batch_size=256"],
    "disback": ["train.steps=500", "train.batch_size=256"],
    "twinflow": ["train.steps=2000", "train.batch_size=256", "train.lr=3e-4"],
    "multi-student": ["train.steps=1000", "train.batch_size=256"],
    "dmd-decoupled": ["train.steps=1000", "train.batch_size=256"],
}


# A light evaluation (10,000 samples against a 10,000-point test split) for the gates that score
# a run's own samples (`distilled`); the metric gates use the resolved default (`resolved_eval`).
LIGHT_EVAL = ["eval.n_samples=10000", "data.n_test=10000"]


@cache
def distilled(method: str, dataset: str, root: str, variant: tuple[str, ...] = ()) -> Path:
    """The run dir of the shipped recipe, shortened by SHORT (with the `variant` overrides
    last), run once per session and evaluated lightly (LIGHT_EVAL), for gates that sample the
    exported student themselves."""
    cfg = load_config(CONFIGS / f"{method}-{dataset}.yaml",
                      ["train.progress=false", "eval.nfe=[1,2,64]", "eval.timing_repeats=0", *LIGHT_EVAL,
                       *SHORT.get(method, []), *variant])
    tag = "".join("-" + re.sub(r"\W+", "", o) for o in variant)  # a run dir per variant
    return run(cfg, Path(root) / f"{method}-{dataset}{tag}").run_dir


@cache
def resolved_eval(method: str, dataset: str, root: str, variant: tuple[str, ...] = (),
                  recipe_length: bool = False) -> dict:
    """The re-based gates' run: the shipped recipe shortened by SHORT (unless `recipe_length`;
    with the `variant` overrides last), evaluated with the resolved metric (MMD² with 95%
    intervals at the default 40,000 samples) against the teacher at 1-64 steps; its eval.json."""
    cfg = load_config(CONFIGS / f"{method}-{dataset}.yaml",
                      ["train.progress=false", "eval.nfe=[1,2,4,8,16,32,64]", "eval.timing_repeats=0",
                       *([] if recipe_length else SHORT.get(method, [])), *variant])
    result = run(cfg, resolved_dir(method, dataset, root, variant, recipe_length))
    return json.loads((result.run_dir / "eval.json").read_text())


def resolved_dir(method: str, dataset: str, root: str, variant: tuple[str, ...] = (),
                 recipe_length: bool = False) -> Path:
    """The run directory of `resolved_eval`'s run (its export: `student/`)."""
    tag = "".join("-" + re.sub(r"\W+", "", o) for o in variant) + ("-recipe" if recipe_length else "")
    return Path(root) / f"resolved-{method}-{dataset}{tag}"


def resolved_rows(method: str, dataset: str, root: str, variant: tuple[str, ...] = (),
                  recipe_length: bool = False) -> dict[tuple[str, int], dict]:
    """`resolved_eval`'s rows keyed by (model, nfe): ("teacher", 1), ("student", 1), ..."""
    return {(r["model"], r["nfe"]): r for r in resolved_eval(method, dataset, root, variant, recipe_length)["rows"]}


@cache
def equivalent_nfe(method: str, dataset: str, root: str, variant: tuple[str, ...] = (),
                   recipe_length: bool = False) -> dict[int, dict]:
    """`resolved_eval`'s comparison rows by student steps, each with `match_nfe` (≡ teacher NFE:
    the cheapest teacher NFE not significantly worse) and `speedup_lower_bound` (better than
    every teacher row)."""
    rows = comparison_rows(resolved_eval(method, dataset, root, variant, recipe_length))
    print(method, dataset, variant, {r["nfe"]: (round(r["mmd"], 5), r["match_nfe"]) for r in rows})
    return {r["nfe"]: r for r in rows}


def matches_at(row: dict) -> int:
    """The student row's ≡ teacher NFE (65 when it beats every teacher row up to 64)."""
    return 65 if row["speedup_lower_bound"] else row["match_nfe"]


FROZEN_FAKE = ("method.fake_lr=1e-9",)  # the fake score stays the teacher: no distribution to match

# Each re-based toy gate's ablation: the overrides that switch off the method's key mechanism
# (the gates' docstrings say what each does and what it scored; bench/gate_nfe.py reports them)
ABLATIONS: dict[str, tuple[str, ...]] = {
    "ode-pairs": ("method.teacher_steps=1",), "progressive": ("method.start_steps=4",),
    "arcflow": ("student.policy_components=1",),  # one component: a straight step per step
    "cd": ("method.intervals=2",), "tscd": ("method.intervals=2",), "mcd": ("method.intervals=2",),
    "scm": ("method.tangent=finite-difference", "method.fd_step=0.5"),
    "slimflow": ("method.guide_weight=0", "method.anneal_fraction=0"),
    "reflow": ("method.teacher_steps=4",), "instaflow": ("method.reflow_fraction=0.02",),
    "boot": ("method.delta=0.5",), "flow-map": ("method.flow_ratio=1.0",), "meanflow": ("method.flow_ratio=1.0",),
    "dmd": ("method.regression_weight=0",), "dmd2": ("method.fake_updates=1",), "sid": FROZEN_FAKE,
    "vsd": FROZEN_FAKE, "f-distill": FROZEN_FAKE, "tdm": FROZEN_FAKE, "tmd": FROZEN_FAKE, "disback": FROZEN_FAKE,
    "twinflow": ("method.rectify_weight=0",), "multi-student": FROZEN_FAKE,
    # slam's own mechanism (the sub-path; off, it is cd) does not help here (its gate says so),
    # so its fast gate is against its undistilled self
    "slam": ("train.lr=1e-9",),
}


def check_gate_and_ablation(method: str, steps: int, k: int, root: str, by_interval: bool = False) -> dict:
    """A re-based gate on 8gaussians: the `steps`-step student matches the teacher at >= k NFE,
    and with its key mechanism switched off (ABLATIONS[method]) it does not. `by_interval`, for
    a method whose ablation's ≡ NFE is not stable across seeds and CPUs (it collapses at some,
    not at others): the student's MMD² is significantly lower than its ablation's instead (the
    95% intervals do not overlap). Returns the student's row."""
    student = equivalent_nfe(method, "8gaussians", root)[steps]
    ablated = equivalent_nfe(method, "8gaussians", root, ABLATIONS[method])[steps]
    assert matches_at(student) >= k, student
    if by_interval:
        assert significantly_better(student, ablated), (student, ablated)
    else:
        assert matches_at(ablated) < k, ablated
    return student


def check_beats_variant(method: str, steps: int, variant: tuple[str, ...], root: str, seed: int = 0) -> None:
    """A paper's claim against the method without one of its parts (the `variant` overrides):
    the recipe's `steps`-step student has a significantly lower MMD² (the 95% intervals do not
    overlap) than the variant's, on 8gaussians at the gate's settings and training seed."""
    check_variant_beats(method, steps, (), variant, root, seed)


def check_variant_beats(method: str, steps: int, better: tuple[str, ...], worse: tuple[str, ...],
                        root: str, seed: int = 0) -> None:
    """The recipe with the `better` overrides has a significantly lower `steps`-step MMD² than
    with the `worse` ones, on 8gaussians at the gate's settings and training seed."""
    base = (f"train.seed={seed}",) if seed else ()
    student = equivalent_nfe(method, "8gaussians", root, (*base, *better))[steps]
    other = equivalent_nfe(method, "8gaussians", root, (*base, *worse))[steps]
    assert significantly_better(student, other), (student, other)


def check_on_checkerboard(method: str, steps: int, k: int, root: str) -> dict:
    """A gate confirmed on a dataset its recipe was not tuned on: on checkerboard, at the
    recipe's length (seed 0), the `steps`-step student matches the teacher at >= k NFE (k as
    `bench/step_distillation.py` measured it, BENCHMARKS.md). Returns the student's row."""
    student = equivalent_nfe(method, "checkerboard", root, recipe_length=True)[steps]
    assert matches_at(student) >= k, student
    return student


def significantly_better(row: dict, other: dict, metric: str = "mmd") -> bool:
    """`row`'s 95% interval of `metric` (lower is better) lies wholly below `other`'s."""
    return row[f"{metric}_ci"][1] < other[f"{metric}_ci"][0]


def check_full_teacher(method: str, steps: int, root: str) -> None:
    """The papers' claim at this scale: the student matches the teacher at its 64 steps (kept,
    marked xfail(strict) with the measured numbers, where it does not hold)."""
    assert matches_at(equivalent_nfe(method, "8gaussians", root)[steps]) >= 64


@pytest.fixture(scope="session")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("gate-runs"))


@pytest.mark.gate("ode-pairs")
def test_ode_pairs_one_step_student_matches_the_teacher_at_16_steps(root):
    """Luhman & Luhman's one-step student regresses onto the teacher's ODE solutions: it
    matches the teacher at 16 steps (measured at these settings, seeds 0 / 1 / 2: 16 / 16 / 16,
    MMD² 0.0030). The ablation solves the pairs' ODE in 1 step instead of 64 (the student then
    learns teacher-1: ≡ 1 / 1 / 1; with 4 steps ≡ 4 / 4), so the accurate ODE solution is what
    the student learns from."""
    student = check_gate_and_ablation("ode-pairs", 1, 16, root)
    assert student["mode_coverage"] == 1.0 and student["min_mode_fraction"] >= 0.05


@pytest.mark.xfail(strict=True, reason=(
    "the one-step student matches the teacher at 16 steps, not 64: MMD² 0.0030 vs teacher-16 "
    "0.0016 and teacher-64 0.00056 (seeds 0-2 at the gate's 1000 steps)"))
def test_ode_pairs_one_step_student_matches_the_full_teacher(root):
    check_full_teacher("ode-pairs", 1, root)


@pytest.mark.slow
def test_ode_pairs_one_step_student_on_checkerboard(root):
    """Confirmed where it was not tuned: ≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md)."""
    check_on_checkerboard("ode-pairs", 1, 32, root)


@pytest.mark.gate("progressive")
def test_progressive_two_step_student_matches_the_teacher_at_16_steps(root):
    """Salimans & Ho's halving rounds from the teacher's 64 steps down to 2: the 2-step student
    matches the teacher at 16 steps (seeds 0 / 1 / 2: 16 / 16 / 16, MMD² 0.0044 / 0.0044 /
    0.0039). The ablation starts the rounds from the teacher's 4 steps (one round 4 -> 2): ≡ 4
    / 4 (MMD² 0.0140), so the long chain of rounds from a fine solve is what the student keeps."""
    check_gate_and_ablation("progressive", 2, 16, root)


@pytest.mark.xfail(strict=True, reason=(
    "the 2-step student matches the teacher at 16 steps, not 64 (MMD² 0.0039-0.0044 vs "
    "teacher-64 0.00056, seeds 0-2 at the gate's 3000 steps)"))
def test_progressive_two_step_student_matches_the_full_teacher(root):
    check_full_teacher("progressive", 2, root)


@pytest.mark.slow
def test_progressive_two_step_student_on_checkerboard(root):
    """Confirmed where it was not tuned: 2-step ≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md)."""
    check_on_checkerboard("progressive", 2, 32, root)


def test_the_speedup_and_equivalent_teacher_nfe_follow_from_the_rows(root, tmp_path):
    """`distill eval` with timings: the ≡ teacher NFE is the cheapest teacher row whose 95%
    interval reaches the student's (every cheaper one is significantly worse), and the speed-up
    is that row's ms / sample over the student's, both timed in the same evaluation."""
    equivalent_nfe("ode-pairs", "8gaussians", root)
    run_dir = Path(root) / "resolved-ode-pairs-8gaussians"
    shutil.copytree(run_dir / "student", tmp_path / "student")
    cfg = load_config(run_dir / "config.yaml", ["eval.nfe=[1,2,4,8,16,32,64]", "eval.timing_repeats=1",
                                                "eval.timing_samples=2000"])
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    evaluate_run(tmp_path)
    eval_data = json.loads((tmp_path / "eval.json").read_text())
    (student,) = comparison_rows(eval_data)
    teacher = {r["nfe"]: r for r in eval_data["rows"] if r["model"] == "teacher"}
    match = teacher[student["match_nfe"]]
    assert student["speedup"] == pytest.approx(match["ms_per_sample"] / student["ms_per_sample"])
    assert match["mmd_ci"][0] <= student["mmd_ci"][1]
    assert all(r["mmd_ci"][0] > student["mmd_ci"][1] for n, r in teacher.items() if n < student["match_nfe"])
