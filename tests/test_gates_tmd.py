"""Gates: `tmd` (transition matching distillation) against the plain student it improves on,
`dmd2` at the same steps, length and batch (configs/toy2d/tmd-8gaussians.yaml against
dmd2-8gaussians.yaml), and against its own flow head run once (`student.inner_steps=1`), on the
resolved toy metric (MMD² with 95% intervals over 40,000 samples), with the flow head's cost
measured beside the plain student's in one process."""

from __future__ import annotations

import pytest

from distill.diffusion.evaluate import Generator, time_sampler
from distill.diffusion.export import load_denoiser
from distill.diffusion.samplers import fixed_noise
from test_gates_toy2d import check_gate_and_ablation, equivalent_nfe, resolved_dir, resolved_eval

pytestmark = pytest.mark.gate

PLAIN = ("train.batch_size=256",)  # dmd2 at tmd's length and batch


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tmd-gate-runs"))


def cost_ratio(root: str, base: tuple[str, ...] = ()) -> float:
    """ms per sample of the tmd student over the plain dmd2 student's at one step (20,000
    samples, best of 5 each, alternating, in this process)."""
    noise = fixed_noise(20000, (2,), 0)
    gens = {}
    for method, variant in (("tmd", base), ("dmd2", (*PLAIN, *base))):
        resolved_eval(method, "8gaussians", root, variant)
        student, _ = load_denoiser(resolved_dir(method, "8gaussians", root, variant) / "student")
        gens[method] = Generator(student, [1], "multistep")
    times = {method: [] for method in gens}
    for _ in range(5):
        for method, gen in gens.items():
            times[method].append(time_sampler(gen, noise, None, 1, 1))
    print("ms per sample", {m: min(v) for m, v in times.items()})
    return min(times["tmd"]) / min(times["dmd2"])


def check_tmd(root: str, base: tuple[str, ...] = ()) -> None:
    """The paper's claim at one outer step: the flow-head student's MMD² interval lies below the
    plain student's and below its own head run once (`inner_steps: 1`), at < 1.3x the plain
    student's wall time."""
    tmd = equivalent_nfe("tmd", "8gaussians", root, base)[1]
    plain = equivalent_nfe("dmd2", "8gaussians", root, (*PLAIN, *base))[1]
    once = equivalent_nfe("tmd", "8gaussians", root, ("student.inner_steps=1", *base))[1]
    assert tmd["mmd_ci"][1] < plain["mmd_ci"][0], (tmd, plain)
    assert tmd["mmd_ci"][1] < once["mmd_ci"][0], (tmd, once)
    assert cost_ratio(root, base) < 1.3


@pytest.mark.gate("tmd")
def test_tmd_one_step_student_matches_the_teacher_at_8_and_its_ablation_does_not(root):
    """Seeds 0 / 1 / 2: 1-step MMD² 0.0053 / 0.0085 / 0.0049, ≡ teacher 8 / 8 / 16. Ablation:
    the fake score frozen at the teacher (no distribution to match through the rollout), seed 0:
    0.3257, ≡ 2 (1 mode of 8)."""
    check_gate_and_ablation("tmd", 1, 8, root)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "the flow head's gain over the plain student does not hold at every seed here: 1-step MMD² "
    "at seeds 0 / 1 / 2 is 0.0053 / 0.0085 / 0.0049 for tmd (flow head, 2 inner steps), 0.0067 "
    "/ 0.0078 / 0.0082 for dmd2 (the plain student at the same length and batch) and 0.0072 / "
    "0.0087 / 0.0053 for the head run once; tmd's interval is below both at seed 0 only (means "
    "0.0062, 0.0076, 0.0070). Its wall time measured 1.02x and 1.39x the plain student's in two "
    "runs (the head's second pass adds ~1% of the multiply-adds; the rest is elementwise work)"))
def test_tmd_flow_head_beats_the_plain_student_at_every_seed(root):
    for seed in range(3):
        check_tmd(root, (f"train.seed={seed}",))
