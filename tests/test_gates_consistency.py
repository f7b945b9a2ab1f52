"""Gates for consistency distillation (issue 4) on toy 2D data, with the shipped recipes
shortened as in test_gates_toy2d.SHORT (1000 steps at batch 256):

- `cd` (re-based on the resolved metric, 8gaussians): the 1-step student matches the teacher
  at >= 16 steps and its coarse-target ablation does not; checkerboard (`slow`) keeps the SWD
  bounds: at least 3x better than teacher-1 and within 1.5x of teacher-64.
- `mcd` (2 segments, re-based): the 2-step student matches the teacher at >= 16 steps and the
  coarse-target ablation does not. With 4 segments (500 steps), one model gets better from 1 to
  2 to 4 steps (SWD at least 2x lower from 1 to 2 steps, 1.33x from 2 to 4) and its 4-step
  samples are within 1.5x of teacher-64: 1.060 / 0.178 / 0.0804 and 1.060 / 0.178 / 0.0825 at
  1 / 2 / 4 steps, seeds 0 / 1 (SWD at 10,000 samples, teacher-64 0.084); checkerboard
  (`slow`, 1000 steps, seed 0) 0.926 / 0.253 / 0.0416, teacher-64 0.0421.

- `scm` (re-based; the recipes start from a teacher with sCM's gentle time embedding,
  `time_scale: 1`): 1-step ≡ 8 at 600 steps and batch 256; checkerboard (`slow`, the recipe's
  1500 steps at batch 512) 0.0573 / 0.0597 (1.33x / 1.38x teacher-64 0.0432). With the
  DDPM-style embedding (1000 rad per unit time) the floor was 2x (docs/methods.md#scm).

- `tscd` (8gaussians on the resolved metric, 1000 steps at batch 256: ≡ 8 with cd's ablation;
  checkerboard `slow` at the recipe's 2000 steps at batch 512 on SWD: 0.0450 / 0.0450 at seeds
  0 / 1, bound 0.0632).
"""

from __future__ import annotations

import pytest

from test_gates_toy2d import (
    DATASETS,
    check_beats_variant,
    check_full_teacher,
    check_gate_and_ablation,
    distilled,
    equivalent_nfe,
    matches_at,
)

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cd-gate-runs"))


def check_student(rows: dict, steps: int, dataset: str) -> None:
    student, teacher, teacher64 = rows["student", steps], rows["teacher", steps], rows["teacher", 64]
    assert student["swd"] <= teacher["swd"] / 3, (student["swd"], teacher["swd"])
    assert student["swd"] <= 1.5 * teacher64["swd"], (student["swd"], teacher64["swd"])
    if dataset == "8gaussians":
        assert student["mode_coverage"] == 1.0 and student["min_mode_fraction"] >= 0.05, student


@pytest.mark.gate("cd")
def test_consistency_distilled_one_step_student_matches_the_teacher_at_16_steps(root):
    """Song et al.'s consistency distillation, on the resolved metric: the 1-step student
    matches the teacher at 16 steps (seeds 0 / 1 / 2: 16 / 16 / 16, MMD² 0.0039 / 0.0038 /
    0.0039). The ablation keeps everything but the teacher's ODE step between adjacent times,
    which spans half the time axis (intervals 2 instead of 32): ≡ 4 / 4 (MMD² 0.031), so the
    fine teacher steps the consistency target is built from are what the student learns."""
    student = check_gate_and_ablation("cd", 1, 16, root)
    assert student["min_mode_fraction"] >= 0.05, student


@pytest.mark.xfail(strict=True, reason=(
    "the 1-step cd student matches the teacher at 16 steps, not 64 (MMD² 0.0038-0.0039 vs "
    "teacher-64 0.00056, seeds 0-2 at the gate's 1000 steps)"))
def test_consistency_distilled_one_step_student_matches_the_full_teacher(root):
    check_full_teacher("cd", 1, root)


@pytest.mark.slow
def test_consistency_distilled_one_step_student_on_checkerboard(root):
    check_student(distilled("cd", "checkerboard", root)["rows"], 1, "checkerboard")


@pytest.mark.gate("mcd")
def test_multistep_consistency_two_step_student_matches_the_teacher_at_16(root):
    """Multistep CD (2 segments, 1000 steps at batch 256): 2-step ≡ 16 / 16 / 16 at seeds 0 / 1
    / 2 (MMD² 0.0045-0.0047; 1 step ≡ 2, 4 steps ≡ 16). Ablation as cd's, the teacher's ODE
    step spanning half the time axis (intervals 2): ≡ 4 (MMD² 0.031)."""
    check_gate_and_ablation("mcd", 2, 16, root)


@pytest.mark.slow
def test_multistep_consistency_two_step_student_on_checkerboard(root):
    rows = distilled("mcd", "checkerboard", root)["rows"]
    check_student(rows, 2, "checkerboard")
    assert rows["student", 2]["swd"] < rows["student", 1]["swd"]


@pytest.mark.gate("mcd")
@pytest.mark.parametrize("dataset", DATASETS)
def test_one_multistep_model_gets_better_from_one_to_two_to_four_steps(dataset, root):
    """Issue 4: one `mcd` model serves 1, 2 and 4 steps, better with each. Trained with 4
    segments (the recipe's 2 segments are best at their 2 steps: a 4-step DDIM grid then
    lands inside segments, where the consistency jump was not trained); 500 steps on 8gaussians."""
    steps = "train.steps=500" if dataset == "8gaussians" else "train.steps=1000"
    rows = distilled("mcd", dataset, root, variant=("method.segments=4", steps, "eval.nfe=[1,2,4,64]"))["rows"]
    swd = {k: rows["student", k]["swd"] for k in (1, 2, 4)}
    print(f"mcd (4 segments) SWD at 1/2/4 steps {swd[1]:.4f} / {swd[2]:.4f} / {swd[4]:.4f}; "
          f"teacher-64 {rows['teacher', 64]['swd']:.4f}")
    assert swd[2] < 0.5 * swd[1] and swd[4] < 0.75 * swd[2], swd
    assert swd[4] <= 1.5 * rows["teacher", 64]["swd"], (swd[4], rows["teacher", 64]["swd"])


@pytest.mark.gate("scm")
def test_continuous_time_consistency_one_step_student_matches_the_teacher_at_8(root):
    """sCM (600 steps at batch 256): 1-step ≡ 8 / 8 / 8 at seeds 0 / 1 / 2 (MMD² 0.0043 /
    0.0042 / 0.0044; 2 steps 8 / 8 / 8). Its continuous-time tangent is not what the gate
    sees: a coarse finite-difference tangent (fd_step 0.5 in θ instead of the JVP) scores
    ≡ 8 (MMD² 0.0041) at seed 0, so the gate has no failing twin (BENCHMARKS.md, gate-nfe)."""
    rows = equivalent_nfe("scm", "8gaussians", root)
    assert matches_at(rows[1]) >= 8 and rows[1]["mode_coverage"] == 1.0, rows[1]


@pytest.mark.slow
def test_continuous_time_consistency_one_step_student_on_checkerboard(root):
    check_student(distilled("scm", "checkerboard", root, recipe_length=True)["rows"], 1, "checkerboard")


@pytest.mark.gate("tscd")
def test_trajectory_segmented_consistency_one_step_student_matches_the_teacher_at_8(root):
    """TSCD (segments 2 -> 1), 1000 steps at batch 256: 1-step ≡ 8 / 8 / 8 at seeds 0 / 1 / 2
    (MMD² 0.0062 / 0.0059 / 0.0061). Ablation as cd's, the teacher's ODE step spanning half the
    time axis (intervals 2): ≡ 4 / 4 (MMD² 0.031)."""
    check_gate_and_ablation("tscd", 1, 8, root)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "the segment schedule does not beat plain consistency distillation here: one segment "
    "(segments [1], the same settings) scores ≡ 16 / 16 (MMD² 0.0039 / 0.0038) against the "
    "2 -> 1 schedule's 8 / 8 / 8 (0.0059-0.0062) at seeds 0-2"))
def test_trajectory_segmented_consistency_beats_one_segment(root):
    check_beats_variant("tscd", 1, ("method.segments=[1]",), root)


@pytest.mark.slow
def test_trajectory_segmented_consistency_one_step_student_on_checkerboard(root):
    check_student(distilled("tscd", "checkerboard", root, recipe_length=True)["rows"], 1, "checkerboard")
