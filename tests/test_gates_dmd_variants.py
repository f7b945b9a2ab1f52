"""Gates for the distribution-matching variants of issue 5 on 8gaussians, with the shipped
recipes shortened by test_gates_toy2d.SHORT (500 steps at batch 256): each student beats the
teacher at its own number of steps by at least 3x on SWD. Their papers' key effects are
measured at recipe length, with the numbers in docs/methods.md; these tests do not compare
(CI time):

- `dmd-phased` (2 experts, 2 steps) against `dmd2` with 2 steps of backward simulation;
- `tdm` (2 steps) against the same;
- `disback` (1 step) against `dmd2`'s convergence: on this toy it is not faster.

`twinflow` is not gated, for CI time: it needs 1000 steps at a raised learning rate to clear
the bound (36 s; 1-step SWD 0.1997 against the teacher's 1.383 when written).
"""

from __future__ import annotations

import pytest

from test_gates_toy2d import distilled

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("dmd-variant-runs"))


@pytest.mark.parametrize(("method", "steps"), [("dmd-phased", 2), ("tdm", 2), ("disback", 1)])
def test_student_beats_the_teacher_at_its_steps_by_3x(method, steps, root):
    rows = distilled(method, "8gaussians", root)["rows"]
    student, teacher = rows["student", steps], rows["teacher", steps]
    print(f"{method} {steps}-step SWD {student['swd']:.4f} vs teacher {teacher['swd']:.3f}, "
          f"teacher-64 {rows['teacher', 64]['swd']:.4f}; smallest mode {student['min_mode_fraction']:.3f}")
    assert student["swd"] <= teacher["swd"] / 3, (student["swd"], teacher["swd"])
