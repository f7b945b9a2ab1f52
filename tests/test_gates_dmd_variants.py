"""Gates for the distribution-matching variants of issue 5 on 8gaussians, with the shipped
recipes shortened by test_gates_toy2d.SHORT (500 steps at batch 256): each student beats the
teacher at its own number of steps by at least 3x on SWD. Their papers' key effects are
measured at recipe length, with the numbers in docs/methods.md; these tests do not compare
(CI time):

- `dmd-phased` (2 experts, 2 steps) against `dmd2` with 2 steps of backward simulation;
- `tdm` (2 steps) against the same;
- `disback` (1 step) against `dmd2`'s convergence: on this toy it is not faster;
- `twinflow` (1 step, at 1000 steps and lr 3e-4 instead of 500) against `dmd2`: it trains one
  network where `dmd2` trains two (the student and a fake score of its size: this one is
  compared, below);
- `multi-student` (`slow`: it trains the 2-class teacher, whose classes are arcs of 4 modes)
  against one `dmd2` student: not robustly better on this toy (docs/methods.md#multi-student).
- `dmd-decoupled` (`slow`: it trains the class-conditional teacher, class = mode; 1000 steps
  at batch 256), against the teacher guided at its CFG scale 3, and its key effect's "shield"
  half: with the distribution-matching term off (CA alone) the generator runs away. Measured
  at seeds 0 / 1 (`distill run`): 0.6209 / 0.6119 vs guided teacher-1 2.979 (the seed-0 run
  trained its teacher in-process, which then reseeded it: fixed since); CA alone 5.631 / 5.569;
  this gate on 2026-12-03: 0.5141, CA alone 5.631 (147 s on one thread, teacher cached).
  Its "spear" half as far as this toy shows it (`slow`, the 2-class teacher): the CA term
  carries guidance's choice of modes into the one-step student, and DM alone does not.
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
from distill.metrics.samples import subset_share
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


def interior_share(run_dir: Path) -> float:
    """Of the one-step student's on-mode samples (4000, labels alternating), the share on the
    interior modes of their class's arc (`interior_modes`), where guidance concentrates a class."""
    data = load_config(run_dir / "config.yaml").data.build()
    student, _ = load_denoiser(run_dir / "student")
    labels = torch.arange(4000) % data.num_classes
    with torch.inference_mode():
        x = sample(student, fixed_noise(4000, (2,), seed=123), 1, "euler", cond=labels)
    return subset_share(x, data.modes, data.mode_std, interior_modes(data.mode_classes))


@pytest.mark.slow  # trains its own (2-class) teacher
def test_decoupled_dmd_ca_term_carries_guidance_into_the_one_step_student(root):
    """On the 2-class teacher (each class an arc of 4 modes), CFG at w = 3 puts 86% of the
    teacher's on-mode samples on the arcs' interior modes (51% unguided: interior_modes). With
    both terms the one-step student moves that way; with DM alone (ca_weight 0, unguided DMD)
    it does not. Measured (bench/decoupled_dmd.py on `distill run` students): 0.698 / 0.548 vs
    DM alone 0.406 / 0.424 at this length, seeds 0 / 1; 0.677 / 0.614 / 0.579 vs 0.313 /
    0.479 / 0.478 at the recipe's 2000 steps, seeds 0-2 (docs/methods.md#dmd-decoupled)."""
    both = interior_share(distilled("dmd-decoupled", "8gaussians-2classes", root)["run_dir"])
    dm_only = interior_share(distilled("dmd-decoupled", "8gaussians-2classes", root,
                                       variant=("method.ca_weight=0",))["run_dir"])
    print(f"dmd-decoupled 2-class interior share: both terms {both:.3f}, DM alone {dm_only:.3f}")
    assert both >= dm_only + 0.08, (both, dm_only)


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
