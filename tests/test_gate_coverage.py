"""Every registered method has an effect gate in `make test` (issue 47): a `gate` test outside
the `slow` marker, not xfail, that names the method (`@pytest.mark.gate("dmd")`, or a `method`
parameter). The baselines the gates compare against are not methods to gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from distill.registry import METHODS

TESTS = Path(__file__).resolve().parent

# what the other methods are compared with: trained by the gates, never gated themselves
BASELINES = {
    "teacher": "trains the teachers the step-distillation gates compare with",
    "supervised": "the label-only student of the classifier gates",
    "lm-ce": "the cross-entropy student of the LM gates (with its own lr sweep)",
}

# registered methods whose effect gate is still `slow` only or missing: issue 47 lists them;
# this list may only shrink (the test fails when a listed method gains a fast gate, too)
WITHOUT_FAST_GATE: dict[str, str] = {}


def test_every_registered_method_has_a_fast_gate(tmp_path: Path):
    out = tmp_path / "covered.json"
    collect = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
         "-m", "gate and not slow", f"--gate-methods={out}", str(TESTS)],
        capture_output=True, text=True, cwd=TESTS.parent, timeout=600)
    assert collect.returncode == 0, collect.stdout[-3000:] + collect.stderr[-3000:]
    covered = set(json.loads(out.read_text()))
    registered = set(METHODS.names())
    assert not covered - registered, f"gates name unregistered methods: {sorted(covered - registered)}"
    missing = registered - covered - set(BASELINES)
    assert missing == set(WITHOUT_FAST_GATE), (
        f"without a fast gate: {sorted(missing - set(WITHOUT_FAST_GATE))}; "
        f"gated now, drop from WITHOUT_FAST_GATE: {sorted(set(WITHOUT_FAST_GATE) - missing)}")
