"""Gates for distribution matching distillation (issue 5) on 8gaussians, with the shipped
recipes (dmd shortened by test_gates_toy2d.SHORT to 800 steps and 5,000 pairs: 1.18x
teacher-64 when written; 1.07x at 1500 steps):

- `dmd`, `dmd2`, `sid` and `vsd` (recipes: 2000 steps, dmd2 3000 at a constant lr: 0.91-1.11x
  at seeds 0-3 on 2026-12-03, where its earlier 2000 cosine steps ranged 1.05-1.90x; vsd at batch
  256: 1.23x when written): the 1-step student's SWD is within 1.3x of the teacher at 64 steps, at
  least 3x better than the teacher at 1 step, and every one of the 8 modes keeps at least 5%
  of the samples (no mode collapse, the classic failure of reverse-KL matching).

On checkerboard, `dmd` and `dmd2` are gated at their recipes' length (`slow`). dmd: 2000 steps,
10k pairs; 1-step SWD 0.0519 / 0.0521 at seeds 0 / 1, 1.23x teacher-64 0.0421, bound 0.0547;
the gate on 2026-12-02: 0.0527 in 388 s. dmd2: 12000 steps without the GAN, 1.09-1.25x at
seeds 0-5 (2026-12-03, one thread, ~140 s each), where the earlier 3000-step recipe ranged
1.20-1.66x (docs/methods.md#dmd2). sid: 12000 steps, 1.15-1.22x at seeds 0-3 (2026-12-03, ~280 s
each; 1.92x at its earlier 2000). vsd: 12000 steps at lr 1e-3, 1.09-1.26x at seeds 0-3 (~180 s
each; its earlier 2000 steps at lr 3e-4: 1.80x at seed 1). `f-distill` is not gated there.
"""

from __future__ import annotations

import pytest

from test_gates_toy2d import distilled

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("dmd-gate-runs"))


SLOW = pytest.mark.slow


@pytest.mark.parametrize(("method", "dataset"), [
    pytest.param("dmd", "8gaussians", marks=SLOW), ("dmd2", "8gaussians"),
    pytest.param("sid", "8gaussians", marks=SLOW), pytest.param("vsd", "8gaussians", marks=SLOW),
    pytest.param("dmd", "checkerboard", marks=SLOW), pytest.param("dmd2", "checkerboard", marks=SLOW),
    pytest.param("sid", "checkerboard", marks=SLOW), pytest.param("vsd", "checkerboard", marks=SLOW),
])
def test_one_step_generator_matches_the_teacher_without_collapse(method, dataset, root):
    rows = distilled(method, dataset, root, recipe_length=dataset == "checkerboard")["rows"]
    student, teacher1, teacher64 = rows["student", 1], rows["teacher", 1], rows["teacher", 64]
    print(f"{method} 1-step SWD {student['swd']:.4f} vs teacher-64 {teacher64['swd']:.4f}, "
          f"teacher-1 {teacher1['swd']:.3f}; smallest mode {student.get('min_mode_fraction')}")
    assert student["swd"] <= 1.3 * teacher64["swd"], (student["swd"], teacher64["swd"])
    assert student["swd"] <= teacher1["swd"] / 3, (student["swd"], teacher1["swd"])
    if dataset == "8gaussians":
        assert student["mode_coverage"] == 1.0 and student["min_mode_fraction"] >= 0.05, student
