"""Gate for dual-head optimisation (DHO) on MNIST-1D with 10% of the labels (400 signals) and
the 25k-signal unlabelled transfer set: the dual-head student beats the same student trained
on those 400 labels alone (issue 6).

Measured when the gate was written (1000 steps, 3 seeds, single-threaded workers): label-only
on 10% of the labels 39.7 ± 3.7, dho 93.1 ± 1.3, single-head kd on the same rows 91.5 ± 3.2.
The issue's "dho beats kd at 10% labels" is NOT met robustly: at 1000 steps dho's lead comes
from one kd seed (87.9), and at the recipes' 2000 steps kd wins (94.5 ± 0.7 vs 93.7 ± 0.2,
BENCHMARKS.md; mixing weights 0.5/0.8/1.0 all gave 93.7-93.9), so it is not gated.
With the teacher's outputs precomputed once per row (`precompute_teacher`): label-only on 10%
of the labels 40.1 ± 3.4, dho 90.5 ± 1.8 at 1000 steps; 39.7 ± 3.2 and 88.5 ± 3.7 at the
gate's 800 steps.
"""

from __future__ import annotations

import pytest

from kd_gate_runs import accuracies, mean

pytestmark = pytest.mark.gate


def test_dho_beats_the_label_only_student_with_ten_percent_of_the_labels(tmp_path):
    label_only = mean(accuracies(tmp_path, "supervised", "method.label_fraction=0.1"))
    dho = mean(accuracies(tmp_path, "dho"))  # the recipe keeps 10% of the labels
    assert dho >= label_only + 10.0, (dho, label_only)
