"""Gates for the flow-map family (issue 4) on 8gaussians, on the resolved metric (MMD² with 95%
intervals at 40,000 samples; test_gates_toy2d.check_gate_and_ablation): `boot` (data-free,
≡ 16), `flow-map` (data-free, ≡ 8), `meanflow` (≡ 8) and `mdt` (≡ 8 at 1 step, 16 at 2), each
with its numbers and ablation in its docstring. `meanflow` and `flow-map` start from a teacher
with a gentle time embedding (the teacher recipe with `student.time_scale=1`).

On checkerboard (`slow`, the recipes' length, seed 0), where no recipe was tuned, each student
matches the teacher at the NFE `bench/step_distillation.py` measured there (BENCHMARKS.md): ≡ 32
for boot, meanflow, flow-map and mdt.
"""

from __future__ import annotations

import pytest

from test_gates_toy2d import (
    check_beats_variant,
    check_full_teacher,
    check_gate_and_ablation,
    check_on_checkerboard,
    equivalent_nfe,
    matches_at,
)

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def boot_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("boot-gate"))


@pytest.mark.gate("boot")
def test_boot_one_step_student_from_noise_only_matches_the_teacher_at_16(boot_root):
    """BOOT, data-free, on the resolved metric: ≡ 16 / 16 / 16 at seeds 0 / 1 / 2 (MMD² 0.0044-
    0.0049). Ablation: the bootstrap step δ spans half the time axis (0.5 instead of 1/32), so
    one teacher step over it is coarse: ≡ 4 / 4 (MMD² 0.0177)."""
    check_gate_and_ablation("boot", 1, 16, boot_root)


@pytest.mark.xfail(strict=True, reason="boot's 1-step student matches the teacher at 16 steps, not 64 "
                   "(MMD² 0.0044-0.0049 vs teacher-64 0.00056, seeds 0-2)")
def test_boot_one_step_student_matches_the_full_teacher(boot_root):
    check_full_teacher("boot", 1, boot_root)


@pytest.mark.slow
def test_boot_one_step_student_from_noise_only_on_checkerboard(boot_root):
    """≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md)."""
    check_on_checkerboard("boot", 1, 32, boot_root)


@pytest.fixture(scope="module")
def mdt_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("mdt-gate"))


@pytest.mark.gate("mdt")
def test_mdt_one_step_student_matches_the_teacher_at_8(mdt_root):
    """MDT on the resolved metric: 1-step ≡ 8 / 8 / 8 at seeds 0 / 1 / 2 (MMD² 0.0076 / 0.0061 /
    0.0072), 2-step ≡ 16 / 16 / 16. No ablation of its mechanism fails this gate at this scale,
    so it has no twin: without velocity distillation (vd_weight 0, below) ≡ 8 / 8; with a
    coarse teacher step in the velocity matching, delta 0.25: ≡ 8 / 8 (MMD² 0.0114 / 0.0111,
    significantly worse) and delta 0.45: ≡ 8 / 8 (0.0062 / 0.0058)."""
    rows = equivalent_nfe("mdt", "8gaussians", mdt_root)
    assert matches_at(rows[1]) >= 8 and matches_at(rows[2]) >= 16, rows


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "MDT's velocity-distillation term shows no effect at this scale: with vd_weight 0 (velocity "
    "matching only) the 1-step student scores MMD² 0.0067 / 0.0072 at seeds 0 / 1 (≡ 8 / 8; 2 steps "
    "≡ 16 / 16), as good as with it (0.0076 / 0.0061 / 0.0072 at seeds 0-2)"))
def test_mdt_velocity_distillation_beats_velocity_matching_alone(mdt_root):
    check_beats_variant("mdt", 1, ("method.vd_weight=0",), mdt_root)


@pytest.mark.slow
def test_mdt_one_step_student_on_checkerboard(mdt_root):
    """≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md)."""
    check_on_checkerboard("mdt", 1, 32, mdt_root)


@pytest.mark.gate("meanflow")
def test_meanflow_one_step_student_matches_the_teacher_at_8(tmp_path_factory):
    """MeanFlow, 1500 steps at batch 256: 1-step ≡ 8 / 8 / 8 at seeds 0 / 1 / 2 (MMD² 0.0072 /
    0.0079 / 0.0074), 2-step 8 / 8 / 8. Ablation: every row a plain flow-matching row (flow_ratio
    1, no average velocities over intervals): the one-step map is one Euler step, ≡ 1 (MMD² 1.29)."""
    check_gate_and_ablation("meanflow", 1, 8, str(tmp_path_factory.mktemp("meanflow-gate")))


@pytest.mark.slow  # the recipe's length, ~2 min on one thread
def test_meanflow_one_step_student_on_checkerboard(tmp_path_factory):
    """≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md)."""
    check_on_checkerboard("meanflow", 1, 32, str(tmp_path_factory.mktemp("meanflow-gate")))


@pytest.fixture(scope="module")
def flow_map_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("flow-map-gate"))


@pytest.mark.gate("flow-map")
def test_flow_map_one_step_student_from_noise_only_matches_the_teacher_at_8(flow_map_root):
    """The data-free flow map on the resolved metric: 1-step ≡ 8 / 8 / 8 at seeds 0 / 1 / 2 (MMD²
    0.0060 / 0.0060 / 0.0062). Ablation: every row a plain match of the teacher's velocity
    (flow_ratio 1, no jumps from noise): the one-step map is one Euler step of the teacher,
    ≡ 1 / 1 (MMD² 1.29)."""
    check_gate_and_ablation("flow-map", 1, 8, flow_map_root)


@pytest.mark.xfail(strict=True, reason="the flow map's 1-step student matches the teacher at 8 steps, not "
                   "64 (MMD² 0.0060-0.0062 vs teacher-64 0.00056, seeds 0-2)")
def test_flow_map_one_step_student_matches_the_full_teacher(flow_map_root):
    check_full_teacher("flow-map", 1, flow_map_root)


@pytest.mark.slow
def test_flow_map_one_step_student_on_checkerboard(flow_map_root):
    """≡ 32 on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md)."""
    check_on_checkerboard("flow-map", 1, 32, flow_map_root)
