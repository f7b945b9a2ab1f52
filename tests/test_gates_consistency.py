"""Gates for consistency distillation (`cd`, issue 4) on toy 2D data, with the shipped recipes:
the 1-step student is at least 3x better (SWD) than the teacher at 1 step and within 1.5x of
the teacher at 64 steps; on 8gaussians every mode keeps at least 5% of the samples."""

from __future__ import annotations

import pytest

from test_gates_toy2d import DATASETS, distilled

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cd-gate-runs"))


@pytest.mark.parametrize("dataset", DATASETS)
def test_consistency_distilled_one_step_student(dataset, root):
    rows = distilled("cd", dataset, root)["rows"]
    student, teacher1, teacher64 = rows["student", 1], rows["teacher", 1], rows["teacher", 64]
    assert student["swd"] <= teacher1["swd"] / 3, (student["swd"], teacher1["swd"])
    assert student["swd"] <= 1.5 * teacher64["swd"], (student["swd"], teacher64["swd"])
    if dataset == "8gaussians":
        assert student["mode_coverage"] == 1.0 and student["min_mode_fraction"] >= 0.05
