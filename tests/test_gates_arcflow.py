"""Gates: ArcFlow's curved 2-step student against straight-step students on toy 2D data
(MMD² with 95% intervals, the resolved metric of `test_gates_toy2d.resolved_eval`).

- fast: at the gate's settings (SHORT: 1000 steps at batch 256) the K = 8 momentum-mixture
  student beats the same training with one component (K = 1: a straight Euler step per
  step), at seeds 0 and 1, and matches the teacher at 16 steps.
- `slow`: against `progressive` at 2 steps; the paper's claim against `ode-pairs` at 2 steps
  (xfail); checkerboard, where the recipe was not tuned.
"""

from __future__ import annotations

import pytest

from test_gates_toy2d import (
    ABLATIONS,
    check_beats_variant,
    check_on_checkerboard,
    equivalent_nfe,
    matches_at,
    significantly_better,
)

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("arcflow-gate-runs"))


@pytest.mark.gate("arcflow")
def test_arcflow_two_step_student_beats_its_straight_step_self(root):
    """At 1000 steps, batch 256: K = 8 scores 2-step MMD² 0.00193 / 0.00190 at seeds 0 / 1,
    the same training with K = 1 (one straight velocity per step) 0.00324 / 0.00324; both ≡ 16
    (the teacher's Euler at 2 steps scores 0.115)."""
    check_beats_variant("arcflow", 2, ABLATIONS["arcflow"], root)
    assert matches_at(equivalent_nfe("arcflow", "8gaussians", root)[2]) >= 16


@pytest.mark.slow  # two recipe-length runs
def test_arcflow_two_step_student_beats_progressive_at_two_steps(root):
    """At the recipes' length (seed 0): arcflow 2-step MMD² 0.00161 (95% 0.00134-0.00187),
    progressive's 2-step student 0.00227 (0.00198-0.00256)."""
    arc = equivalent_nfe("arcflow", "8gaussians", root, recipe_length=True)[2]
    progressive = equivalent_nfe("progressive", "8gaussians", root, recipe_length=True)[2]
    assert significantly_better(arc, progressive), (arc, progressive)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "ArcFlow's 2-step student does not beat ode-pairs' 2-step student here: at the recipes' "
    "length MMD² 0.00161 / 0.00150 (seeds 0 / 1) vs 0.00122 (0.00097-0.00147). Tried: lr 2e-4 "
    "(0.00176), 3000 steps (0.00164), K = 16 (0.00187), 8 matched states (0.00174), no "
    "teacher mixing (0.00169)"))
def test_arcflow_two_step_student_beats_ode_pairs_at_two_steps(root):
    arc = equivalent_nfe("arcflow", "8gaussians", root, recipe_length=True)[2]
    pairs = equivalent_nfe("ode-pairs", "8gaussians", root, ("method.student_steps=2",), recipe_length=True)[2]
    assert significantly_better(arc, pairs), (arc, pairs)


@pytest.mark.slow
def test_arcflow_two_step_student_on_checkerboard(root):
    """Where the recipe was not tuned: ≡ 32 (MMD² 0.00084; teacher-32 0.00107). Here the
    straight-step K = 1 student reaches the teacher too (0.00089), so no effect can show; so
    on `rings` (a teacher trained like the others): K = 8 0.00252, K = 1 0.00265, teacher-64
    0.00258, at 1000 steps, batch 256."""
    check_on_checkerboard("arcflow", 2, 32, root)
