"""Gates for consistency distillation (issue 4) on toy 2D data, with the shipped recipes
shortened as in test_gates_toy2d.SHORT (1000 steps at batch 256):

- `cd` (re-based on the resolved metric, 8gaussians): the 1-step student matches the teacher
  at >= 16 steps and its coarse-target ablation does not; on checkerboard (`slow`, the recipe's
  length) ≡ 32.
- `mcd` (2 segments, re-based): the 2-step student matches the teacher at >= 16 steps and the
  coarse-target ablation does not. With 4 segments, one model gets significantly better from 1
  to 2 to 4 steps, and at 4 steps matches the teacher at 16 (8gaussians) and 32 (checkerboard).

- `mcd` on MLCM's teacher-trajectory states (data-free): 2-step ≡ 16 as on data, where
  states off the teacher's paths miss it.
- `scm` (re-based; the recipes start from a teacher with sCM's gentle time embedding,
  `time_scale: 1`): 1-step ≡ 8 at 600 steps and batch 256; with TBCM's data-free trajectory
  pairs as well, where states reached in 1 teacher step instead of 8 miss it.
- `tscd` (1000 steps at batch 256): ≡ 8, with cd's ablation.
- `slam` (1000 steps at batch 256): 1-step ≡ 4 where its undistilled self is ≡ 1; the paper's
  claim, 2 steps better than `cd` at equal training steps, does not hold (xfail, `slow`).

On checkerboard (`slow`, the recipes' length, seed 0), where no recipe was tuned, cd, mcd (2
steps), scm and tscd match the teacher at 32 (`bench/step_distillation.py`, BENCHMARKS.md).
"""

from __future__ import annotations

import pytest

from test_gates_toy2d import (
    DATASETS,
    check_beats_variant,
    check_full_teacher,
    check_gate_and_ablation,
    check_on_checkerboard,
    check_variant_beats,
    equivalent_nfe,
    matches_at,
    significantly_better,
)

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cd-gate-runs"))


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
    """≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md)."""
    check_on_checkerboard("cd", 1, 32, root)


TWO_STEPS = ("method.student_steps=2",)
NOISE_CONTROL = (*TWO_STEPS, "method.sampler_eta=0.3")  # SCott's noise strength between steps


@pytest.mark.slow  # an option's gate (cd keeps its fast gate): slow to hold make test's time
@pytest.mark.gate("cd")
def test_noise_strength_control_of_the_sampler_beats_fresh_noise_at_two_steps(root):
    """SCott's noise-strength control: the same cd student (1000 steps at batch 256) sampled
    in 2 steps with DDIM at eta 0.3 between them scores MMD² 0.00467 (95% 0.0044-0.0049), ≡ 16,
    against 0.00561 (0.0053-0.0059), ≡ 8, with fresh noise (eta 1, Song et al.'s multistep
    consistency sampler) and 0.0058 deterministic (eta 0)."""
    check_variant_beats("cd", 2, NOISE_CONTROL, TWO_STEPS, root)


@pytest.mark.slow
def test_noise_strength_control_of_the_sampler_at_another_seed(root):
    """Seed 1: 0.00466 (0.0044-0.0049) at eta 0.3, 0.00571 (0.0055-0.0060) with fresh noise."""
    check_variant_beats("cd", 2, NOISE_CONTROL, TWO_STEPS, root, seed=1)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "the noise strength that helps on 8gaussians does not transfer: on checkerboard (the "
    "recipe's length) the 2-step student scores MMD² 0.00068 (≡ 32) with fresh noise and 0.0248 "
    "at eta 0.3 (0.0164 at 0.7, 0.0077 at 0.9): the best eta is the data's, to be tuned per set"))
def test_noise_strength_control_of_the_sampler_on_checkerboard(root):
    controlled = equivalent_nfe("cd", "checkerboard", root, NOISE_CONTROL, recipe_length=True)[2]
    fresh = equivalent_nfe("cd", "checkerboard", root, TWO_STEPS, recipe_length=True)[2]
    assert significantly_better(controlled, fresh), (controlled, fresh)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "SCott's stochastic teacher step (method.stochastic=0.1) does not reliably beat cd's ODE step "
    "at 2 steps: MMD² 0.00506 vs 0.00561 at seed 0 (intervals just apart), 0.00533 vs 0.00571 at "
    "seed 1 (overlapping); it costs the 1-step student (0.016 vs 0.0039; eta 0.2: 0.053, 0.5: "
    "0.42): with a stochastic target the L2 consistency loss learns its mean, the posterior mean "
    "at 1 step. With sampler_eta 0.6 on top, 0.0101"))
def test_stochastic_teacher_step_beats_the_ode_step_at_two_steps(root):
    for seed in (1, 0):
        check_variant_beats("cd", 2, (*TWO_STEPS, "method.stochastic=0.1"), TWO_STEPS, root, seed)


@pytest.mark.gate("mcd")
def test_multistep_consistency_two_step_student_matches_the_teacher_at_16(root):
    """Multistep CD (2 segments, 1000 steps at batch 256): 2-step ≡ 16 / 16 / 16 at seeds 0 / 1
    / 2 (MMD² 0.0045-0.0047; 1 step ≡ 2, 4 steps ≡ 16). Ablation as cd's, the teacher's ODE
    step spanning half the time axis (intervals 2): ≡ 4 (MMD² 0.031)."""
    check_gate_and_ablation("mcd", 2, 16, root)


TRAJECTORY_STATES = ("method.states=trajectory",)


@pytest.mark.slow  # an option's gate (mcd keeps its fast gates): slow to hold make test's time
@pytest.mark.gate("mcd")
def test_multistep_consistency_on_the_teachers_trajectory_states_needs_no_data(root):
    """MLCM's training states (`states: trajectory`: x_{t_n} 8 teacher Heun steps along its ODE
    from prior noise, the dataset never read), 2 segments, 1000 steps at batch 256: 2-step
    MMD² 0.00459 (95% 0.0043-0.0049), ≡ 16, as good as noised data (0.00447). States reached
    in 1 teacher step instead (off its paths) score 0.00793, ≡ 8. (cd on trajectory states:
    1-step 0.00383, ≡ 16, against 0.00389 on data.)"""
    trajectory = equivalent_nfe("mcd", "8gaussians", root, TRAJECTORY_STATES)[2]
    data = equivalent_nfe("mcd", "8gaussians", root)[2]
    off_path = equivalent_nfe("mcd", "8gaussians", root, (*TRAJECTORY_STATES, "method.trajectory_steps=1"))[2]
    assert matches_at(trajectory) >= 16 > matches_at(off_path), (trajectory, off_path)
    assert not significantly_better(data, trajectory), (data, trajectory)


@pytest.mark.slow
def test_multistep_consistency_two_step_student_on_checkerboard(root):
    """2-step ≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md); its 1 step is ≡ 2."""
    check_on_checkerboard("mcd", 2, 32, root)


@pytest.mark.slow  # mcd's fast gate is its 2-step student at 16 (above)
@pytest.mark.gate("mcd")
@pytest.mark.parametrize("dataset", DATASETS)
def test_one_multistep_model_gets_better_from_one_to_two_to_four_steps(dataset, root):
    """Issue 4: one `mcd` model serves 1, 2 and 4 steps, better with each (non-overlapping
    intervals). Trained with 4 segments (the recipe's 2 segments are best at their 2 steps: a
    4-step DDIM grid then lands inside segments, where the consistency jump was not trained);
    500 steps on 8gaussians, 1000 on checkerboard (`slow`). Measured at seeds 0 / 1: MMD² 0.697
    / 0.0148 / 0.0014 at 1 / 2 / 4 steps on 8gaussians (≡ 2 / 4 / 16 at both seeds) and 0.474 /
    0.0307 / 0.0006 on checkerboard (≡ 2 / 8 / 32)."""
    steps = "train.steps=500" if dataset == "8gaussians" else "train.steps=1000"
    rows = equivalent_nfe("mcd", dataset, root, ("method.segments=4", steps))
    assert significantly_better(rows[2], rows[1]) and significantly_better(rows[4], rows[2]), rows
    assert matches_at(rows[4]) >= (16 if dataset == "8gaussians" else 32), rows[4]


@pytest.mark.gate("scm")
def test_continuous_time_consistency_one_step_student_matches_the_teacher_at_8(root):
    """sCM (600 steps at batch 256): 1-step ≡ 8 / 8 / 8 at seeds 0 / 1 / 2 (MMD² 0.0043 /
    0.0042 / 0.0044; 2 steps 8 / 8 / 8). Its continuous-time tangent is not what the gate
    sees: a coarse finite-difference tangent (fd_step 0.5 in θ instead of the JVP) scores
    ≡ 8 (MMD² 0.0041) at seed 0, so the gate has no failing twin (BENCHMARKS.md, gate-nfe)."""
    rows = equivalent_nfe("scm", "8gaussians", root)
    assert matches_at(rows[1]) >= 8 and rows[1]["mode_coverage"] == 1.0, rows[1]


TRAJECTORY_PAIRS = ("method.pairs=trajectory",)


@pytest.mark.slow  # two more runs; scm's fast gate is its one-step student at 8 (above)
@pytest.mark.gate("scm")
def test_trajectory_pairs_need_no_data_and_must_lie_on_the_teachers_paths(root):
    """TBCM's data-free pairs (`pairs: trajectory`: states 8 teacher Heun steps along its own
    ODE paths from prior noise, the dataset never read), 600 steps at batch 256: 1-step MMD²
    0.0041 (95% 0.0039-0.0044), ≡ 8, as good as sCD's noised data (0.0043, 0.0041-0.0046).
    Reaching the sampled time in 1 teacher step instead of 8 (states off the teacher's paths)
    scores 0.0181, ≡ 4."""
    trajectory = equivalent_nfe("scm", "8gaussians", root, TRAJECTORY_PAIRS)[1]
    data = equivalent_nfe("scm", "8gaussians", root)[1]
    off_path = equivalent_nfe("scm", "8gaussians", root, (*TRAJECTORY_PAIRS, "method.trajectory_steps=1"))[1]
    assert matches_at(trajectory) >= 8 > matches_at(off_path), (trajectory, off_path)
    assert not significantly_better(data, trajectory), (data, trajectory)


@pytest.mark.slow
def test_continuous_time_consistency_one_step_student_on_checkerboard(root):
    """≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md)."""
    check_on_checkerboard("scm", 1, 32, root)


LADD = ("method.adversarial.weight=0.1", "method.adversarial.lr=1e-3", "method.adversarial.t_min=0.0",
        "method.adversarial.t_max=0.1")


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "SANA-Sprint's LADD term does not improve sCM's 1-step student here: at the gate's settings "
    "MMD² 0.00406 (95% 0.0038-0.0043) with it vs 0.00431 (0.0041-0.0046) without (the best of: "
    "weight 0.01-1, head lr 1e-4/1e-3, t' in [0.02, 0.98] / [0.02, 0.5] / [0.02, 0.3] / [0, 0.1], "
    "the teacher's last or first hidden layer, fakes at the training point or from noise); at "
    "the recipe's length 0.00619 vs 0.00595. The head stays near chance (hinge loss 1.7 of 2)"))
def test_ladd_improves_the_continuous_time_consistency_one_step_student(root):
    check_variant_beats("scm", 1, LADD, (), root)


@pytest.mark.slow
def test_trajectory_pairs_on_checkerboard(root):
    """TBCM's data-free pairs at the recipe's length on checkerboard (not tuned there): 1-step
    MMD² 0.00094 (95% 0.0007-0.0012), ≡ 32, as the data pairs (0.00094)."""
    rows = equivalent_nfe("scm", "checkerboard", root, TRAJECTORY_PAIRS, recipe_length=True)
    assert matches_at(rows[1]) >= 32, rows[1]


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
    """≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md)."""
    check_on_checkerboard("tscd", 1, 32, root)


@pytest.mark.gate("slam")
def test_slam_one_step_student_matches_the_teacher_at_4_where_its_undistilled_self_does_not(root):
    """SLAM (1000 steps at batch 256): 1-step ≡ 4 / 4 at seeds 0 / 1 (MMD² 0.0218 / 0.0202,
    5x below teacher-2's 0.115); 2 steps ≡ 4 (0.0326 / 0.0310). Its undistilled self (the
    teacher's weights, `train.lr=1e-9`) is ≡ 1 (1.467). The sub-path's own effect is the
    xfail below."""
    check_gate_and_ablation("slam", 1, 4, root)


@pytest.mark.slow  # one more run than the fast gate
@pytest.mark.xfail(strict=True, reason=(
    "SLAM's 2-step student does not beat cd's at equal training steps on this toy: with the "
    "sub-path (gamma ~ U(0, 1) as the student's second time) 2-step MMD² 0.0326 / 0.0310 at "
    "seeds 0 / 1 vs 0.0056 / 0.0057 with it off (cd), 1000 steps at batch 256; at the recipe's "
    "1500 steps at batch 512: 0.0247 vs 0.0033 (1 step 0.0165 vs 0.0031). Tried: gamma as "
    "1 - gamma over the full embedding range (worse: 0.044), the student read at its first "
    "time without a gamma input (0.033 at 1 step, 0.016 at 2)"))
def test_slam_two_step_student_beats_cd_at_equal_training_steps(root):
    check_beats_variant("slam", 2, ("method.subpath=false",), root)
