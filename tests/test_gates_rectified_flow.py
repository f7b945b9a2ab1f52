"""Gates for the rectified-flow family (issue 4) on 8gaussians, with the shipped recipes
shortened by test_gates_toy2d.SHORT (10,000 teacher couplings, batch 256).

Re-based on the resolved metric (MMD² with 95% intervals at 40,000 samples; ≡ teacher NFE),
seeds 0 / 1 / 2 (ablations 0 / 1):
- `reflow`: 1-step ≡ 8 / 8 / 8, 2-step ≡ 16 / 16 / 16 (MMD² 0.0021). Ablation: couplings from
  the teacher's ODE in 4 steps instead of 64: 2-step ≡ 8 / 8 (0.0099).
- `instaflow`: 1-step ≡ 16 / 16 / 16 (MMD² 0.0043). Ablation: almost no reflow before the
  one-step distillation (reflow_fraction 0.02, i.e. distilling the teacher itself): ≡ 8 / 8
  (0.0118), so straightening first is what InstaFlow adds.
Lee et al. 2024's training improvements (u-shaped t with pseudo-Huber) beat plain reflow at 2
steps (and not at 1, xfail). The "full teacher" claims (>= 64) are xfail(strict). `slimflow`'s student has at most 1/3 of the
teacher's parameters. On checkerboard (`slow`, the recipes' length, seed 0), where no recipe was tuned, each student
matches the teacher at the NFE `bench/step_distillation.py` measured there (BENCHMARKS.md): ≡ 32
for reflow (its paths 10x straighter than the teacher's), instaflow and slimflow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import load_config
from distill.diffusion.export import load_denoiser
from test_gates_toy2d import (
    check_full_teacher,
    check_gate_and_ablation,
    check_on_checkerboard,
    check_variant_beats,
    equivalent_nfe,
    matches_at,
    resolved_eval,
)

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("rectified-flow-gate-runs"))


@pytest.mark.gate("reflow")
def test_reflow_straightens_the_paths_and_its_two_step_student_matches_the_teacher_at_16(root):
    two = check_gate_and_ablation("reflow", 2, 16, root)
    assert two["mmd"] < equivalent_nfe("reflow", "8gaussians", root)[1]["mmd"]
    straightness = resolved_eval("reflow", "8gaussians", root)["straightness"]
    assert straightness["student"] <= 0.1 * straightness["teacher"], straightness


@pytest.mark.xfail(strict=True, reason="reflow's 2-step student matches the teacher at 16 steps, "
                   "not 64 (MMD² 0.0020-0.0021 vs teacher-64 0.00056, seeds 0-2)")
def test_reflow_two_step_student_matches_the_full_teacher(root):
    check_full_teacher("reflow", 2, root)


IMPROVED = ("method.loss=pseudo-huber",)  # with the recipe's u-shaped t: Lee et al. 2024's training
PLAIN = ("method.time_sampling.kind=uniform",)  # Liu et al.'s reflow: uniform t, L2


@pytest.mark.slow  # two more runs; reflow's fast gate is its 2-step student at 16 (above)
@pytest.mark.gate("reflow")
def test_improved_reflow_training_beats_plain_reflow_at_two_steps(root):
    """Lee et al. 2024's training (u-shaped t and pseudo-Huber, c = 0.03) against plain reflow
    (uniform t, L2) at the gate's settings: 2-step MMD² 0.00145 (95% 0.0012-0.0017) vs 0.00216
    (0.0019-0.0024) at seed 0 (seed 1: 0.00144 vs 0.00212). Either part alone does not do it:
    u-shaped t with L2 (the recipe) 0.00209, uniform t with pseudo-Huber (c = 0.01) 0.00183."""
    check_variant_beats("reflow", 2, IMPROVED, PLAIN, root)


@pytest.mark.slow
def test_improved_reflow_training_beats_plain_reflow_at_two_steps_at_another_seed(root):
    check_variant_beats("reflow", 2, IMPROVED, PLAIN, root, seed=1)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "Lee et al.'s training improves 2-step, not 1-step, reflow here: 1-step MMD² 0.0090 / 0.0092 "
    "(seeds 0 / 1) vs plain reflow's 0.0074 / 0.0074; with the paper's c = 0.00054 sqrt(d) = "
    "0.00076, 0.0092"))
def test_improved_reflow_training_beats_plain_reflow_at_one_step(root):
    check_variant_beats("reflow", 1, IMPROVED, PLAIN, root)


@pytest.mark.slow
def test_reflow_straightens_the_paths_on_checkerboard(root):
    """1-step ≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md), on paths 10x straighter than the teacher's."""
    check_on_checkerboard("reflow", 1, 32, root)
    straightness = resolved_eval("reflow", "checkerboard", root, recipe_length=True)["straightness"]
    assert straightness["student"] <= 0.1 * straightness["teacher"], straightness


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
    """≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md)."""
    check_on_checkerboard("slimflow", 1, 32, root)


@pytest.mark.gate("instaflow")
def test_instaflow_one_step_student_matches_the_teacher_at_16_and_needs_its_reflow(root):
    check_gate_and_ablation("instaflow", 1, 16, root)


@pytest.mark.xfail(strict=True, reason="instaflow's 1-step student matches the teacher at 16 steps, "
                   "not 64 (MMD² 0.0043 vs teacher-64 0.00056, seeds 0-2)")
def test_instaflow_one_step_student_matches_the_full_teacher(root):
    check_full_teacher("instaflow", 1, root)


@pytest.mark.slow
def test_instaflow_one_step_student_on_checkerboard(root):
    """≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md)."""
    check_on_checkerboard("instaflow", 1, 32, root)
