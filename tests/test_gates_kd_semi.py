"""Gates for dual-head optimisation (DHO) on MNIST-1D with 10% of the labels (400 signals) and
the 25k-signal unlabelled transfer set.

DHO's claim is against single-head KD with the same few labels, the method it improves on (the
ablation of its second head). Measured at the gates' 800 steps, seeds 0 / 1 / 2
(tests/kd_gate_runs.py): kd at label_fraction 0.1 89.8 ± 2.4 (92.3 / 87.5 / 89.7), dho
91.6 ± 2.2 (89.4 / 91.8 / 93.7): a paired lead of 1.8 ± 2.4 (standard error), not significant;
kd drawing half of every batch from the labelled rows (labelled_share 0.5) 91.2 ± 1.3. At the
recipes' 2000 steps kd wins (94.5 ± 0.7 vs 93.7 ± 0.2, BENCHMARKS.md). So that gate is kept at
the paper's claim and marked xfail(strict). What holds: both distil far above the label-only
student on those 400 labels (39.7 ± 3.7 when written).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kd_gate_runs import accuracies, mean, paired_lead

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kd-semi-gates")


@pytest.mark.gate("dho")
def test_dho_beats_the_label_only_student_with_ten_percent_of_the_labels(out: Path):
    label_only = mean(accuracies(out, "supervised", "method.label_fraction=0.1"))
    dho = mean(accuracies(out, "dho"))  # the recipe keeps 10% of the labels
    assert dho >= label_only + 10.0, (dho, label_only)


@pytest.mark.slow  # three more MNIST-1D runs for a claim that does not hold here
@pytest.mark.xfail(strict=True, reason=(
    "DHO's lead over single-head KD on the same 10% of labels is 1.8 ± 2.4 points at 800 steps "
    "(seeds 0-2: dho 89.4 / 91.8 / 93.7, kd 92.3 / 87.5 / 89.7), not significant; kd wins at 2000 steps"))
def test_dho_beats_single_head_kd_on_the_same_labels(out: Path):
    lead, se = paired_lead(accuracies(out, "dho"), accuracies(out, "kd", "method.label_fraction=0.1"))
    assert lead > 2 * se, (lead, se)
