"""Gates for distribution matching distillation (issue 5) on toy 2D data.

On 8gaussians every 1-step generator is gated on the resolved metric (MMD² with 95% intervals
at 40,000 samples): it matches the teacher at >= K Euler steps, K the least over seeds 0-2 at
the gate's settings (test_gates_toy2d.SHORT), and the ablation of its key mechanism does not
(`check_gate_and_ablation`; for dmd and dmd2, whose ablations' ≡ NFE varies with the seed and
the CPU, the student's MMD² interval lies below its ablation's: `by_interval`).
Measured ≡ teacher NFE (seeds 0 / 1 / 2, MMD² in brackets):

- `dmd` (800 steps, 5,000 pairs): 8 / 8 / 8 (0.0065-0.0071). Without the regression loss
  (`regression_weight: 0`) it collapses onto a few modes: ≡ 2 / 4 (0.200 / 0.019, 0 and 6 of 8
  modes held), DMD's argument for the loss. On a second CPU type (AVX-512 EPYC) the same seeds
  run differently: 8 / 8 / 8 (0.0086 / 0.0078 / 0.0067) against the ablation's 8 / 4 / 4
  (0.0130 / 0.0144 / 0.0183; 8, 7 and 3 of 8 modes held), so the gate is the interval: the
  student is significantly better than its ablation at every seed on both.
- `dmd2` (3000 steps at batch 256, half the recipe's): 8 / 8 / 8 (0.0067 / 0.0078 / 0.0082)
  on the AVX-512 EPYC. With one fake-score update per generator update instead of five (the
  two time-scale rule off): 8 / 8 / 8 (0.0110 / 0.0102 / 0.0124), significantly worse at
  every seed. (At the recipe's batch 512 the student was ≡ 16 at seeds 0-2 on the first CPU
  type, 0.0045-0.0050, and ≡ 8 on the second, 0.0053.)
- `sid` (800 steps at batch 256): 8 / 8 / 8 (0.0075 / 0.0068 / 0.0127). With the fake score
  frozen at the teacher (`fake_lr: 1e-9`: the score identity has no generator score to
  compare) the generator drifts off: ≡ 1 (1.72, worse than teacher-1).
- `vsd` (1000 steps at batch 256): 8 / 8 / 8 (0.0054 / 0.0062 / 0.0059, on the AVX-512 EPYC;
  at the recipe's 2000 steps 16 / 8 / 8, 0.0048-0.0052); its LoRA fake score frozen: ≡ 2
  (0.297).
- `f-distill` (800 steps at batch 256): 8 / 8 / 4 (0.0060 / 0.0098 / 0.0137); its fake score
  frozen: ≡ 2 (0.469, collapsed).

Claims that do not hold at this scale are kept `slow` and xfail(strict), with the numbers:
DMD's distribution-matching term over the regression alone, SiD's alpha = 1.2 over alpha = 0
(at one seed of two). f-distill's Jensen-Shannon weighting over reverse KL (DMD's) does hold
by MMD² at seeds 0 and 1 (`slow`), though not by K.

On checkerboard (`slow`, the recipes' length, seed 0), where no recipe was tuned, each student
matches the teacher at the NFE `bench/step_distillation.py` measured there (BENCHMARKS.md): dmd
≡ 16; dmd2, sid and vsd ≡ 32.
"""

from __future__ import annotations

import pytest

from test_gates_toy2d import (
    FROZEN_FAKE,
    check_beats_variant,
    check_gate_and_ablation,
    check_on_checkerboard,
)

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("dmd-gate-runs"))


@pytest.mark.parametrize(("method", "k"), [("sid", 8), ("vsd", 8), ("f-distill", 4)])
def test_one_step_generator_matches_the_teacher_and_its_ablation_does_not(method, k, root):
    student = check_gate_and_ablation(method, 1, k, root)
    assert student["mode_coverage"] == 1.0 and student["min_mode_fraction"] >= 0.02, student


@pytest.mark.parametrize("method", ["dmd", "dmd2"])
def test_one_step_generator_matches_the_teacher_and_beats_its_ablation(method, root):
    student = check_gate_and_ablation(method, 1, 8, root, by_interval=True)
    assert student["mode_coverage"] == 1.0 and student["min_mode_fraction"] >= 0.02, student


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "the regression alone does better here: with the fake score frozen (no distribution-matching "
    "gradient) dmd's student is ≡ 16 (MMD² 0.0022) against 8 (0.0065-0.0071, seeds 0-2) with it"))
def test_dmd_distribution_matching_beats_its_regression_alone(root):
    check_beats_variant("dmd", 1, FROZEN_FAKE, root)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "alpha = 1.2 beats alpha = 0 at seed 0 (MMD² 0.0075 [0.0072, 0.0078] vs 0.0123 [0.0118, "
    "0.0128]), not at seed 1 (0.0068 [0.0065, 0.0071] vs 0.0068 [0.0065, 0.0072]); both ≡ 8"))
def test_sid_alpha_beats_the_plain_score_difference_at_two_seeds(root):
    for seed in (0, 1):
        check_beats_variant("sid", 1, ("method.alpha=0",), root, seed)


@pytest.mark.slow
def test_f_distill_js_beats_reverse_kl_at_two_seeds(root):
    """f-distill's claim against DMD's reverse KL (the same discriminator and settings, only the
    weighting h(r) changed): the Jensen-Shannon student has the lower MMD² at seeds 0 and 1,
    0.0060 [0.0058, 0.0063] vs 0.0070 [0.0067, 0.0074] and 0.0098 [0.0093, 0.0103] vs 0.0121
    [0.0118, 0.0123], though both stay ≡ 8 (seed 2 of JS: ≡ 4, 0.0137)."""
    for seed in (0, 1):
        check_beats_variant("f-distill", 1, ("method.divergence=reverse-kl",), root, seed)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dmd", "dmd2", "sid", "vsd"])
def test_one_step_generator_on_checkerboard(method, root):
    """≡ 16 (dmd) and 32 (dmd2, sid, vsd) on checkerboard (seed 0 at the recipe's length; `bench/step_distillation.py`, BENCHMARKS.md)."""
    check_on_checkerboard(method, 1, 16 if method == "dmd" else 32, root)
