"""Gates: `pso` fine-tunes a timestep-distilled DMD2 student of 8gaussians onto the mixture
rotated by 22.5 degrees (configs/toy2d/pso-8gaussians-rotated.yaml) and keeps it few-step, where plain
diffusion fine-tuning on the same data (`method.objective=diffusion`) does not. Scored on the
resolved metric (MMD² over 40,000 samples with 95% intervals) against the rotated target; the
starting student is the same run with no update (`train.steps=1`, `train.lr=1e-9`)."""

from __future__ import annotations

import pytest

from test_gates_toy2d import resolved_rows

pytestmark = pytest.mark.gate

START = ("train.steps=1", "train.lr=1e-9", "train.checkpoint_every=1")
DIFFUSION = ("method.objective=diffusion",)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("pso-gate-runs"))


def student_row(root: str, variant: tuple[str, ...]) -> dict:
    rows = resolved_rows("pso", "8gaussians-rotated", root, variant)
    (row,) = [r for key, r in rows.items() if key[0] == "student"]
    print(variant, round(row["mmd"], 5), [round(c, 5) for c in row["mmd_ci"]])
    return row


def check_pso_adapts(root: str, base: tuple[str, ...] = ()) -> None:
    """PSO moves to the new data: significantly closer than the student it starts from, by >= 1/4."""
    pso, start = student_row(root, base), student_row(root, (*base, *START))
    assert pso["mmd_ci"][1] < start["mmd_ci"][0] and pso["mmd"] <= 0.75 * start["mmd"]


def check_pso_stays_few_step(root: str, base: tuple[str, ...] = ()) -> None:
    """PSO stays few-step: significantly better than diffusion fine-tuning at as many steps, by >= 2x."""
    pso, plain = student_row(root, base), student_row(root, (*base, *DIFFUSION))
    assert pso["mmd_ci"][1] < plain["mmd_ci"][0] and pso["mmd"] <= 0.5 * plain["mmd"]


FAST = ("train.steps=1000",)  # half the recipe's length: make test's time


@pytest.mark.gate("pso")
def test_pso_moves_a_two_step_student_to_new_data_and_keeps_it_two_step(root):
    """1000 steps at batch 256, seeds 0 / 1 / 2 (on an AVX-512 EPYC): PSO's 2-step MMD² to the
    rotated target 0.0211 / 0.0218 / 0.0231 (seed 0's 95% interval 0.0207-0.0216), the starting
    student's 0.0413, diffusion fine-tuning's 0.1063 / 0.1038 / 0.1148 (its 2 steps no longer
    make a sample: it is a many-step model again). At the recipe's 2000 steps, seed 0: 0.0209,
    0.0417 and 0.1163. Tuned here: beta 0.1 (0.3: 0.0298, 1: 0.0361; with the error measured
    on x0 instead of in the model's velocity space, beta 0.1 diverged at 2 steps, MMD² 0.342,
    and beta 0.3 at 4 steps, 0.122)."""
    check_pso_adapts(root, FAST)
    check_pso_stays_few_step(root, FAST)


@pytest.mark.slow
def test_pso_gate_at_another_seed(root):
    """Seed 1: 0.0220 against the start's 0.0417 and diffusion fine-tuning's 0.1097."""
    check_pso_adapts(root, ("train.seed=1",))
    check_pso_stays_few_step(root, ("train.seed=1",))


FOUR_STEP = ("teacher.overrides=[method.student_steps=4]",)


@pytest.mark.slow
def test_pso_moves_a_four_step_student_to_new_data(root):
    """The recipe, untuned, on a 4-step DMD2 student: 0.0142 against the start's 0.0467."""
    check_pso_adapts(root, FOUR_STEP)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "at 4 steps plain diffusion fine-tuning does not lose the few-step sampling on 8gaussians: "
    "its 4-step MMD² is 0.0127, PSO's 0.0142 (the start's 0.0467); a 4-step multistep sampler "
    "with a plain denoiser is already good on this toy, so the paper's premise shows at 2 steps"))
def test_pso_beats_diffusion_fine_tuning_on_a_four_step_student(root):
    check_pso_stays_few_step(root, FOUR_STEP)
