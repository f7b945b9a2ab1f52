"""Gates for the rectified-flow family (issue 4) on 8gaussians, with the shipped recipes
shortened by test_gates_toy2d.SHORT (10,000 teacher couplings, batch 256).

Re-based on the resolved metric (MMD² with 95% intervals at 40,000 samples; ≡ teacher NFE),
seeds 0 / 1 / 2 (ablations 0 / 1):
- `reflow`: 1-step ≡ 8 / 8 / 8, 2-step ≡ 16 / 16 / 16 (MMD² 0.0021). Ablation: couplings from
  the teacher's ODE in 4 steps instead of 64: 2-step ≡ 8 / 8 (0.0099).
- `instaflow`: 1-step ≡ 16 / 16 / 16 (MMD² 0.0043). Ablation: almost no reflow before the
  one-step distillation (reflow_fraction 0.02, i.e. distilling the teacher itself): ≡ 8 / 8
  (0.0118), so straightening first is what InstaFlow adds.
The "full teacher" claims (>= 64) are xfail(strict). The SWD bounds below, kept for slimflow
and the checkerboard twins (`slow`), are the earlier evaluation's (10,000 samples):

- `reflow` straightens the teacher's paths (straightness at most a tenth of the teacher's) and
  its 1-step student is at least 3x better (SWD) than the teacher at 1 step and within 1.5x of
  teacher-64, with every mode kept.
- `instaflow`: the same 1-step bounds for its reflow-then-distil student.
- `slimflow`: the same 1-step bounds with a student of at most 1/3 of the teacher's parameters.

Measured with these settings (single-threaded; SWD, teacher-64 0.0840, teacher-1 1.383,
teacher straightness 0.756): reflow 1-step 0.1085 (1.29x teacher-64), 2-step 0.0871,
straightness 0.0067; slimflow 0.0990 (1.18x, 54k vs 207k parameters); instaflow (500 steps
of reflow, then 500 of one-step distillation on the reflowed flow's 16-step solutions)
0.0996 (1.19x; 0.0919 at 1500 steps).
The checkerboard twins are `slow` (make test-all); measured (2026-12-02, single-threaded;
teacher-64 0.0421, teacher-1 1.127, teacher straightness 0.508): reflow 1-step 0.0547 (1.30x),
2-step 0.0493, straightness 0.0011; instaflow 0.0574 (1.36x); slimflow at this length 0.0749
misses the bound, so its checkerboard gate runs the full recipe: 0.0459 (1.09x).
The full recipes are in docs/methods.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config import load_config
from distill.diffusion.export import load_denoiser
from test_gates_consistency import check_student
from test_gates_toy2d import (
    check_full_teacher,
    check_gate_and_ablation,
    distilled,
    equivalent_nfe,
    matches_at,
)

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("rectified-flow-gate-runs"))


@pytest.mark.gate("reflow")
def test_reflow_straightens_the_paths_and_its_two_step_student_matches_the_teacher_at_16(root):
    two = check_gate_and_ablation("reflow", 2, 16, root)
    assert two["mmd"] < equivalent_nfe("reflow", "8gaussians", root)[1]["mmd"]
    straightness = json.loads((Path(root) / "resolved-reflow-8gaussians" / "eval.json").read_text())["straightness"]
    assert straightness["student"] <= 0.1 * straightness["teacher"], straightness


@pytest.mark.xfail(strict=True, reason="reflow's 2-step student matches the teacher at 16 steps, "
                   "not 64 (MMD² 0.0020-0.0021 vs teacher-64 0.00056, seeds 0-2)")
def test_reflow_two_step_student_matches_the_full_teacher(root):
    check_full_teacher("reflow", 2, root)


@pytest.mark.slow
def test_reflow_straightens_the_paths_on_checkerboard(root):
    result = distilled("reflow", "checkerboard", root)
    check_student(result["rows"], 1, "checkerboard")
    straightness = result["straightness"]
    assert straightness["student"] <= 0.1 * straightness["teacher"], straightness
    assert result["rows"]["student", 2]["swd"] < result["rows"]["student", 1]["swd"]


@pytest.mark.gate("slimflow")
def test_slimflow_one_step_student_with_a_third_of_the_parameters_matches_the_teacher_at_8(root):
    """SlimFlow's quarter-size student (2000 steps at batch 256): 1-step ≡ 8 / 8 / 16 at seeds
    0 / 1 / 2 (MMD² 0.0056 / 0.0066 / 0.0047). Its two mechanisms do not show here, so the gate
    has no failing twin: without the annealing reflow and the flow-guided term
    (anneal_fraction 0, guide_weight 0: plain reflow then distillation of the small network)
    the student scores ≡ 16 (MMD² 0.0050) at seed 0 (BENCHMARKS.md, gate-nfe section)."""
    assert matches_at(equivalent_nfe("slimflow", "8gaussians", root)[1]) >= 8
    run_dir = Path(root) / "resolved-slimflow-8gaussians"
    student, _ = load_denoiser(run_dir / "student")
    teacher, _ = load_config(run_dir / "config.yaml").teacher.load()
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(student) <= count(teacher) / 3, (count(student), count(teacher))


@pytest.mark.slow
def test_slimflow_one_step_student_on_checkerboard(root):
    # the recipe's length: the CI length scores 0.0749 there (bound 0.0632)
    check_student(distilled("slimflow", "checkerboard", root, recipe_length=True)["rows"], 1, "checkerboard")


@pytest.mark.gate("instaflow")
def test_instaflow_one_step_student_matches_the_teacher_at_16_and_needs_its_reflow(root):
    check_gate_and_ablation("instaflow", 1, 16, root)


@pytest.mark.xfail(strict=True, reason="instaflow's 1-step student matches the teacher at 16 steps, "
                   "not 64 (MMD² 0.0043 vs teacher-64 0.00056, seeds 0-2)")
def test_instaflow_one_step_student_matches_the_full_teacher(root):
    check_full_teacher("instaflow", 1, root)


@pytest.mark.slow
def test_instaflow_one_step_student_on_checkerboard(root):
    check_student(distilled("instaflow", "checkerboard", root)["rows"], 1, "checkerboard")
