"""Gates for the flow-map family (issue 4). On 8gaussians (and, `slow`, on checkerboard at the
recipe's length: 0.0443 on 2026-12-02, bound 0.0632; the CI length scores 0.0648 there),
`boot`, trained on prior noise only, samples in one step at least 3x better (SWD) than the teacher at one step and within
1.5x of teacher-64, with every mode kept.

Measured with test_gates_toy2d.SHORT (1000 steps, batch 256, lr 2e-4, EMA 0.995; single-
threaded): 1-step SWD 0.0989 (teacher-1 1.383, teacher-64 0.0840); the recipe (4000 steps)
0.0793 on 8gaussians and 0.0443 on checkerboard.

`meanflow` and `flow-map` start from a teacher with a gentle time embedding (the teacher
recipe with `student.time_scale=1`; teacher-64 0.0856 on 8gaussians, 0.0432 on checkerboard)
and are gated at one step with the same bounds. `meanflow` (`slow`: the recipe's 4000 steps
at batch 512, ~2 min a dataset on one thread): 0.1198 / 0.1207 at seeds 0 / 1 on 8gaussians
(bound 0.128), 0.0557 on checkerboard (bound 0.0648); 2000 steps at batch 256 give 0.1329,
outside. `flow-map` (2000 steps at batch 256): 0.1066 / 0.1128 at seeds 0 / 1 on 8gaussians;
checkerboard (`slow`, the recipe) 0.0421. With the DDPM embedding `flow-map` missed 1.5x even
at the recipe's length, and `meanflow` was gated at 2 steps (docs/methods.md).

`mdt` (the transport to t = 0, learned from noised data and the student's own one-step samples)
on both toys, the same bounds, shortened by SHORT (1000 steps, batch 256; single-threaded):
1-step SWD 0.0937 / 0.0972 at seeds 0 / 1 on 8gaussians (bound 0.126) and 0.0492 / 0.0530 on
checkerboard (bound 0.0632; teacher-64 0.0421, teacher-1 1.127).
"""

from __future__ import annotations

import pytest

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
def boot_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("boot-gate"))


def test_boot_one_step_student_from_noise_only_matches_the_teacher_at_16(boot_root):
    """BOOT, data-free, on the resolved metric: ≡ 16 / 16 / 16 at seeds 0 / 1 / 2 (MMD² 0.0044-
    0.0049). Ablation: the bootstrap step δ spans half the time axis (0.5 instead of 1/32), so
    one teacher step over it is coarse: ≡ 4 / 4 (MMD² 0.0177)."""
    check_gate_and_ablation("boot", 1, 16, ("method.delta=0.5",), boot_root)


@pytest.mark.xfail(strict=True, reason="boot's 1-step student matches the teacher at 16 steps, not 64 "
                   "(MMD² 0.0044-0.0049 vs teacher-64 0.00056, seeds 0-2)")
def test_boot_one_step_student_matches_the_full_teacher(boot_root):
    check_full_teacher("boot", 1, boot_root)


@pytest.mark.slow
def test_boot_one_step_student_from_noise_only_on_checkerboard(boot_root):
    # at the recipe's length: the CI length scores 0.0648 there (bound 0.0632)
    check_student(distilled("boot", "checkerboard", boot_root, recipe_length=True)["rows"], 1, "checkerboard")


@pytest.fixture(scope="module")
def mdt_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("mdt-gate"))


@pytest.mark.slow  # ~90 s a run: make test-all
def test_mdt_one_step_student_matches_the_teacher_at_8(mdt_root):
    """MDT on the resolved metric: 1-step ≡ 8 / 8 / 8 at seeds 0 / 1 / 2 (MMD² 0.0076 / 0.0061 /
    0.0072), 2-step ≡ 16 / 16 / 16."""
    rows = equivalent_nfe("mdt", "8gaussians", mdt_root)
    assert matches_at(rows[1]) >= 8 and matches_at(rows[2]) >= 16, rows


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "MDT's velocity-distillation term shows no effect at this scale: with vd_weight 0 (velocity "
    "matching only) the 1-step student scores MMD² 0.0067 / 0.0072 at seeds 0 / 1 (≡ 8 / 8; 2 steps "
    "≡ 16 / 16), as good as with it (0.0076 / 0.0061 / 0.0072 at seeds 0-2)"))
def test_mdt_velocity_distillation_beats_velocity_matching_alone(mdt_root):
    student = equivalent_nfe("mdt", "8gaussians", mdt_root)[1]
    alone = equivalent_nfe("mdt", "8gaussians", mdt_root, ("method.vd_weight=0",))[1]
    assert student["mmd_ci"][1] < alone["mmd_ci"][0], (student, alone)


@pytest.mark.slow
def test_mdt_one_step_student_on_checkerboard(mdt_root):
    check_student(distilled("mdt", "checkerboard", mdt_root)["rows"], 1, "checkerboard")


@pytest.mark.slow  # the recipe's length, ~2 min a dataset on one thread
@pytest.mark.parametrize("dataset", ["8gaussians", "checkerboard"])
def test_meanflow_one_step_student(dataset, tmp_path_factory):
    rows = distilled("meanflow", dataset, str(tmp_path_factory.mktemp("meanflow-gate")))["rows"]
    check_student(rows, 1, dataset)


@pytest.fixture(scope="module")
def flow_map_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("flow-map-gate"))


def test_flow_map_one_step_student_from_noise_only_matches_the_teacher_at_8(flow_map_root):
    """The data-free flow map on the resolved metric: 1-step ≡ 8 / 8 / 8 at seeds 0 / 1 / 2 (MMD²
    0.0060 / 0.0060 / 0.0062). Ablation: every row a plain match of the teacher's velocity
    (flow_ratio 1, no jumps from noise): the one-step map is one Euler step of the teacher,
    ≡ 1 / 1 (MMD² 1.29)."""
    check_gate_and_ablation("flow-map", 1, 8, ("method.flow_ratio=1.0",), flow_map_root)


@pytest.mark.xfail(strict=True, reason="the flow map's 1-step student matches the teacher at 8 steps, not "
                   "64 (MMD² 0.0060-0.0062 vs teacher-64 0.00056, seeds 0-2)")
def test_flow_map_one_step_student_matches_the_full_teacher(flow_map_root):
    check_full_teacher("flow-map", 1, flow_map_root)


@pytest.mark.slow
def test_flow_map_one_step_student_on_checkerboard(flow_map_root):
    check_student(distilled("flow-map", "checkerboard", flow_map_root, recipe_length=True)["rows"], 1, "checkerboard")
