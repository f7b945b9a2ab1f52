"""Gates for the distribution-matching variants of issue 5 on 8gaussians, with the shipped
recipes shortened by test_gates_toy2d.SHORT (500 steps at batch 256): each student beats the
teacher at its own number of steps by at least 3x on SWD. Their papers' key effects are
measured at recipe length, with the numbers in docs/methods.md; these tests do not compare
(CI time):

- `dmd-phased` (2 experts, 2 steps) against `dmd2` with 2 steps of backward simulation;
- `tdm` (2 steps) against the same;
- `disback` (1 step) against `dmd2`'s convergence: on this toy it is not faster; on SiD's loss
  from a random generator it is (`slow`, below);
- `twinflow` (1 step, at 1000 steps and lr 3e-4 instead of 500) against `dmd2`: it trains one
  network where `dmd2` trains two (the student and a fake score of its size: this one is
  compared, below);
- `multi-student` (`slow`: it trains the 2-class teacher, whose classes are arcs of 4 modes)
  against one `dmd2` student: not robustly better on this toy with students of the teacher's
  size, but with small students (1/146 of the teacher, pretrained by teacher score matching) 2
  beat one of the same size (docs/methods.md#multi-student).
- `dmd-decoupled` (`slow`: it trains the class-conditional teacher, class = mode; 1000 steps
  at batch 256), against the teacher guided at its CFG scale 3, and its key effect's "shield"
  half: with the distribution-matching term off (CA alone) the generator runs away. Measured
  at seeds 0 / 1 (`distill run`): 0.6209 / 0.6119 vs guided teacher-1 2.979 (the seed-0 run
  trained its teacher in-process, which then reseeded it: fixed since); CA alone 5.631 / 5.569;
  this gate on 2026-12-03: 0.5141, CA alone 5.631 (147 s on one thread, teacher cached); on
  2026-12-04 0.5416 (the teacher retrained once: the `time_scale` setting changed its cache key).
  Its "spear" half as far as this toy shows it (`slow`, the 2-class teacher): the CA term
  carries guidance's choice of modes into the one-step student, and DM alone does not; and
  the paper's decoupled schedules: CA at t <= 0.7 beats CA over DM's whole range.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import CONFIGS
from distill.config import load_config
from distill.data.toy2d import interior_modes
from distill.diffusion.export import load_denoiser
from distill.diffusion.samplers import fixed_noise, sample
from distill.metrics.samples import sliced_wasserstein, subset_share
from distill.runner import build
from test_gates_toy2d import distilled

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("dmd-variant-runs"))


@pytest.mark.parametrize(("method", "steps"), [("dmd-phased", 2), ("tdm", 2), ("disback", 1),
                                               ("twinflow", 1)])
def test_student_beats_the_teacher_at_its_steps_by_3x(method, steps, root):
    rows = distilled(method, "8gaussians", root)["rows"]
    student, teacher = rows["student", steps], rows["teacher", steps]
    print(f"{method} {steps}-step SWD {student['swd']:.4f} vs teacher {teacher['swd']:.3f}, "
          f"teacher-64 {rows['teacher', 64]['swd']:.4f}; smallest mode {student['min_mode_fraction']:.3f}")
    assert student["swd"] <= teacher["swd"] / 3, (student["swd"], teacher["swd"])


@pytest.mark.slow  # three recipe-length runs, ~1 min each
def test_disback_on_sid_leaves_the_random_init_collapse_before_sid(root):
    """DisBack's key effect, faster convergence, where the paper puts it: a one-step generator
    far from the teacher. From random weights (samples collapsed near the origin) SiD's
    generator is still collapsed after 2000 steps; with SiD's real score backtracked along the
    recorded degradation path it has left the collapse. Seeds 0-3 when written: 0.1851 /
    0.1858 / 0.1881 / 0.1807 vs `sid` 0.4608 / 0.4656 / 0.4523 / 0.4414 (plain `sid` needs
    3000-4000 steps). The ablation keeps the recording (the fake score starts fitted to the
    generator) but targets the teacher from the first step (`path_points: 1`): still
    collapsed (0.4607 / 0.4485 at seeds 0 / 1), so the backtracking is what does it."""
    back = distilled("disback-sid", "8gaussians", root, recipe_length=True)["rows"]["student", 1]
    sid = distilled("sid-random", "8gaussians", root, recipe_length=True)["rows"]["student", 1]
    no_path = distilled("disback-sid", "8gaussians", root, recipe_length=True,
                        variant=("method.path_points=1",))["rows"]["student", 1]
    print(f"1-step SWD from random weights, 2000 steps: disback (sid) {back['swd']:.4f}, sid "
          f"{sid['swd']:.4f}, no path {no_path['swd']:.4f}")
    assert back["swd"] <= sid["swd"] / 1.8, (back["swd"], sid["swd"])
    assert back["swd"] <= no_path["swd"] / 1.8, (back["swd"], no_path["swd"])


@pytest.mark.slow  # trains its own (2-class) teacher
def test_multi_student_beats_the_teacher_at_one_step_by_3x(root):
    """On the 2-class 8gaussians teacher (each class an arc of 4 modes, so one teacher step
    lands on the class's mean), 2 class-routed one-step students."""
    rows = distilled("multi-student", "8gaussians-2classes", root)["rows"]
    student, teacher = rows["student", 1], rows["teacher", 1]
    print(f"multi-student 1-step SWD {student['swd']:.4f} vs teacher {teacher['swd']:.3f}, teacher-64 "
          f"{rows['teacher', 64]['swd']:.4f}; in mode {student['in_mode_fraction']:.3f}, "
          f"class accuracy {student['class_accuracy']:.3f}")
    assert student["swd"] <= teacher["swd"] / 3, (student["swd"], teacher["swd"])
    assert student["in_mode_fraction"] >= 0.5, student  # sharp: on a mode, not between them
    assert student["class_accuracy"] >= 0.95, student  # each class's student draws its own arc


@pytest.mark.slow  # trains its own (2-class) teacher
def test_small_multi_students_beat_one_small_student(root):
    """MSD's latency setting: 2 students of 1/146 of the teacher's size, one class each, from
    random weights with teacher score matching first, against one student of the same size with
    the same stages (the recipe, 3000 steps). Seeds 0-2 when written: SWD 0.296 / 0.311 / 0.305
    vs 0.349 / 0.333 / 0.349, in mode 0.28 / 0.21 / 0.23 vs 0.14 / 0.14 / 0.11 (~40 s each)."""
    multi = distilled("multi-student-small", "8gaussians-2classes", root, recipe_length=True)["rows"]["student", 1]
    one = distilled("multi-student-small-k1", "8gaussians-2classes", root, recipe_length=True)["rows"]["student", 1]
    print(f"small students, 1 step: 2 students SWD {multi['swd']:.4f}, in mode {multi['in_mode_fraction']:.3f}; "
          f"one student {one['swd']:.4f}, {one['in_mode_fraction']:.3f}")
    assert multi["swd"] < one["swd"], (multi["swd"], one["swd"])
    assert multi["in_mode_fraction"] >= 1.3 * one["in_mode_fraction"], (multi, one)
    assert multi["class_accuracy"] >= 0.95, multi


@pytest.mark.slow  # trains its own (class-conditional) teacher
def test_decoupled_dmd_beats_the_guided_teacher_and_needs_its_shield(root):
    """Decoupled DMD: the 1-step student is at least 3x better than the teacher guided at the
    same scale (w = 3) at 1 step; with dm_weight 0 (the CFG-augmentation "spear" alone) its SWD
    is at least 3x worse than with both terms: distribution matching is the "shield". The
    "spear" half (CA making few-step samples better) does not show on this toy
    (docs/methods.md#dmd-decoupled)."""
    both = distilled("dmd-decoupled", "8gaussians", root)["rows"]
    ca_only = distilled("dmd-decoupled", "8gaussians", root, variant=("method.dm_weight=0",))["rows"]
    student, teacher = both["student", 1], both["teacher", 1]
    print(f"dmd-decoupled 1-step SWD {student['swd']:.4f} vs guided teacher-1 {teacher['swd']:.3f}; "
          f"CA alone {ca_only['student', 1]['swd']:.4f}")
    assert student["swd"] <= teacher["swd"] / 3, (student["swd"], teacher["swd"])
    assert ca_only["student", 1]["swd"] >= 3 * student["swd"], (ca_only["student", 1]["swd"], student["swd"])


N_GUIDED = 4000  # samples per 2-class student (labels alternating) in the dmd-decoupled gate


def one_step_samples(run_dir: Path) -> torch.Tensor:
    """The run's one-step student on fixed noise, labels alternating: (N_GUIDED, 2)."""
    student, _ = load_denoiser(run_dir / "student")
    with torch.inference_mode():
        return sample(student, fixed_noise(N_GUIDED, (2,), seed=123), 1, "euler", cond=torch.arange(N_GUIDED) % 2)


@pytest.mark.slow  # trains its own (2-class) teacher
def test_decoupled_dmd_ca_carries_guidance_and_wants_its_own_noise_range(root):
    """On the 2-class teacher (each class an arc of 4 modes), CFG at w = 3 puts 86% of the
    teacher's on-mode samples on the arcs' interior modes (51% unguided: `interior_modes`).
    The "spear": with the CA term (the recipe: at t <= 0.7) the one-step student moves that
    way, with DM alone (ca_weight 0, unguided DMD) it does not. Decoupled schedules: CA over
    DM's whole range overshoots the modes, and the recipe's student is closer to the guided
    teacher's 64-step samples. At this length (1000 steps, batch 256), seeds 0 / 1: interior
    share 0.860 / 0.691 (DM alone 0.399 / 0.418), SWD to the guided teacher 0.225 / 0.262 (CA
    over the whole range 0.499 / 0.540); 34 s on one thread with the teacher cached. At the
    recipe's length: docs/methods.md#dmd-decoupled."""
    runs = {name: distilled("dmd-decoupled", "8gaussians-2classes", root, variant=variant)["run_dir"]
            for name, variant in (("recipe", ()), ("dm_only", ("method.ca_weight=0",)),
                                  ("whole_range", ("method.ca_t_max=0.98",)))}
    cfg = load_config(runs["recipe"] / "config.yaml")
    data, (teacher, _) = cfg.data.build(), cfg.teacher.load()
    with torch.inference_mode():
        guided = sample(teacher, fixed_noise(N_GUIDED, (2,), seed=123), 64, "euler",
                        cond=torch.arange(N_GUIDED) % 2, guidance=cfg.method.guidance)
    x = {name: one_step_samples(run_dir) for name, run_dir in runs.items()}
    interior = {name: subset_share(v, data.modes, data.mode_std, interior_modes(data.mode_classes)) for name, v in x.items()}
    to_guided = {name: sliced_wasserstein(v, guided) for name, v in x.items()}
    print(f"dmd-decoupled 2-class: interior share {interior}; SWD to the guided teacher's 64 steps {to_guided}")
    assert interior["recipe"] >= interior["dm_only"] + 0.15, interior
    assert to_guided["recipe"] * 1.5 <= to_guided["whole_range"], to_guided


def trained_parameters(method: str) -> tuple[int, int]:
    """(parameters the optimiser updates, parameters of the student) for the 8gaussians recipe."""
    _, _, _, instance = build(load_config(CONFIGS / f"{method}-8gaussians.yaml"))
    trained = sum(p.numel() for group in instance.param_groups() for p in group.parameters)
    return trained, sum(p.numel() for p in instance.student.parameters())


def test_twinflow_trains_one_network_where_dmd2_trains_two():
    """TwinFlow's fake flow is the student itself at negative times: its optimiser holds the
    student only, while `dmd2` also trains a fake score of the student's size."""
    twin, twin_student = trained_parameters("twinflow")
    dmd2, dmd2_student = trained_parameters("dmd2")
    print(f"trained parameters: twinflow {twin:,} (student {twin_student:,}), "
          f"dmd2 {dmd2:,} (student {dmd2_student:,})")
    assert twin == twin_student
    assert dmd2 >= 2 * dmd2_student
