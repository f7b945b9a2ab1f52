"""Gates on real (small) images: the digits teacher, and its progressive, ode-pairs, reflow, mdt,
boot, slimflow, instaflow, cd, tscd, scm, meanflow, mcd and flow-map students, trained with the shipped configs at reduced length (a few minutes in all; the
teacher recipe is trained once per session and cached)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch

from conftest import REPO
from distill.config import load_config
from distill.diffusion.samplers import fixed_noise, sample
from distill.runner import run

pytestmark = [pytest.mark.gate, pytest.mark.slow]  # minutes each: make test-all, not CI

# The bounds below were calibrated on FID against the training images, the rows' `fid_train`
# (their primary metric is now KID against the held-out images); they read it until each gate
# is re-based on KID's intervals, as the toy gates were on MMD².
DIGITS = REPO / "configs" / "digits"
# The shipped teacher trains 3000 steps at batch 128; 600 steps at batch 64 are enough for the
# gates and keep CI short (the UNet forward is compute-bound: ~114 ms per 128 images on one
# thread), and the gates score 500 samples per row (the recipes: 1000). Measured with these
# settings (one thread, tests/test_gates_digits.py): teacher FID 114.6 / 11.95 / 8.69 at
# 1 / 4 / 50 steps (class accuracy 94.6% at 50); progressive 8 -> 4 steps FID 9.77 in 300
# steps (class accuracy 96.4%; 9.65 and 96.8% in 400 steps); ode-pairs 1 step FID 14.6. (1000 samples: teacher 111.9 / 11.4 / 7.32,
# progressive 8.74, ode-pairs 13.7; with the teacher at batch 128 as well: 109.7 / 10.4 /
# 5.33, progressive 6.63, ode-pairs 11.1.) The students train at batch 64 to halve their time.
SHORT_TEACHER = ["train.steps=600", "train.batch_size=64"]  # added to the recipe's own teacher overrides
SHORT = {
    "progressive": ["method.start_steps=8", "train.steps=300", "train.batch_size=64"],
    # its gate reads the 1- and 50-step rows (the teacher's come from the evaluation cache)
    "ode-pairs": ["method.teacher_steps=16", "method.pairs=1000", "train.steps=300", "train.batch_size=64",
                  "eval.nfe=[1,50]"],
    # 4000 couplings of 16 teacher steps, 1000 steps at batch 64; straightness is measured beside
    # FID (2026-12-04, one thread beside another job, `distill run configs/digits/reflow-digits.yaml`
    # with these overrides: 1-step FID 15.02 / 14.49 at seeds 0 / 1 vs the teacher's 114.2 / 8.67
    # at 1 / 50 (bound 17.3), straightness 0.0073 vs 0.0970; 2 steps 13.54 / 13.08 and 4 steps
    # 11.76 / 11.52, not 3x better than the teacher's 32.8 / 11.9 there). The earlier 1000
    # couplings at 300 steps gave 19.18, outside 2x teacher-50.
    "reflow": ["method.teacher_steps=16", "method.pairs=4000", "train.steps=1000", "train.batch_size=64",
               "eval.nfe=[1,50]"],
    # the recipe's 2000 steps, gated at its headline 2 steps (2 segments): 2-step FID 10.25 /
    # 10.39 at seeds 0 / 1 vs the teacher's 32.85 / 8.67 at 2 / 50 steps (bounds 10.95 and 17.3;
    # class accuracy 94.8 / 94.2%; 2026-12-04, one thread beside another job, `distill run
    # configs/digits/mcd-digits.yaml` with the short teacher's overrides and eval.n_samples=500).
    # 300 / 800 steps gave 13.2, 4000 steps 9.38; with the gentle time embedding (time_scale 1,
    # teacher and student) 11.29 / 11.15 at 2000, its own teacher's 2 steps being 38.56.
    "mcd": ["eval.nfe=[1,2,50]"],
    # test_gates_digits_dmd2.py: half the recipe's 5000 steps (k = 5: 500 generator updates)
    "dmd2": ["train.steps=2500", "eval.nfe=[1,50]"],
    # 800 of the recipes' 2000 steps (2026-12-03, one thread, `distill run` with these
    # overrides): mdt 1-step FID 9.61 (class accuracy 95.0%; 5.8 min), boot 11.45 (95.6%;
    # 3.9 min) vs the teacher's 114.2 at 1 step and 8.67 at 50
    "mdt": ["train.steps=800", "eval.nfe=[1,50]"],
    "boot": ["train.steps=800", "eval.nfe=[1,50]"],
    # the quarter-size student from scratch: 2000 couplings of 16 teacher steps, 2500 steps at
    # batch 64 (1500 annealing reflow, 1000 flow-guided distillation); 2026-12-03: 1-step FID
    # 14.71 vs the teacher's 114.2 / 8.67 at 1 / 50 (bound 17.3), 6.8 min beside three other jobs
    "slimflow": ["method.pairs=2000", "method.teacher_steps=16", "train.steps=2500", "train.batch_size=64",
                 "eval.nfe=[1,50]"],
    # consistency distillation (pseudo-Huber): half the recipes' 4000 steps; 2026-12-03: 1-step
    # FID 12.63 (cd) and 13.26 (tscd) vs the teacher's 114.2 / 8.67 at 1 / 50.
    "cd": ["train.steps=2000", "eval.nfe=[1,50]"],
    "tscd": ["train.steps=2000", "eval.nfe=[1,50]"],
    # reflow then one-step distillation (1000 + 1000 steps) on 4000 couplings of 16 teacher
    # steps (2026-12-04, one thread beside another job, 2.9 min under pytest): 1-step FID 12.80 /
    # 13.46 at seeds 0 / 1 vs the teacher's 114.2 / 8.67 at 1 / 50 (2000 couplings: 15.44 / 15.71)
    "instaflow": ["method.pairs=4000", "method.teacher_steps=16", "train.steps=2000", "train.batch_size=64",
                  "eval.nfe=[1,50]"],
    # the recipe's 1000 steps, from the short teacher with the gentle time embedding (the recipe's
    # teacher override; 171.8 / 8.75 at 1 / 50 steps): 1-step FID 14.02 / 13.77 at seeds 0 / 1
    # (2026-12-04, one thread beside other jobs; 2.3 min under pytest); with the DDPM embedding 20.56 / 21.95
    "scm": ["eval.nfe=[1,50]"],
    # the recipe's 4000 steps, from the short teacher with its gentle time embedding
    # (time_scale: 1, the recipe's teacher override; 171.8 / 38.56 / 8.75 at 1 / 2 / 50 steps):
    # 1-step FID 12.57 (class accuracy 93.4%), 12.2 min beside two other jobs (2026-12-04); 2-step
    # 9.94, and 12.56 / 9.93 at train.seed=1, measured with the option's prototype (the same
    # computation: it scored 12.566 here too). With the DDPM embedding the 2-step FID was 13.58.
    "meanflow": ["eval.nfe=[1,50]"],
    # the recipe's 4000 steps with plain L2 (adaptive_power: 0), gated at 1 step: FID 11.50 / 16.50 at
    # seeds 0 / 1 vs the teacher's 114.2 / 8.67 at 1 / 50 (bound 17.3; 2026-12-04, one thread
    # beside other jobs, `distill run configs/digits/flow-map-digits.yaml` with the short
    # teacher's overrides). Its 2 steps, 10.60 / 11.53, are not 3x better than the teacher's 32.8
    # at seed 1; with the adaptive weight the 2-step FID was 19.64 (2000 steps). 10 min under pytest.
    "flow-map": ["eval.nfe=[1,50]"],
}


@cache
def distilled(method: str, root: str) -> dict:
    """Run the shipped digits recipe once per session; eval.json rows keyed by (model, nfe)."""
    recipe = DIGITS / f"{method}-digits.yaml"
    teacher = "teacher.overrides=[" + ",".join([*load_config(recipe).teacher.overrides, *SHORT_TEACHER]) + "]"
    cfg = load_config(recipe, ["train.progress=false", "eval.nfe=[1,4,50]", "eval.timing_repeats=0", "eval.n_samples=500",
                               teacher, *SHORT[method]])
    result = run(cfg, Path(root) / method)
    data = json.loads((result.run_dir / "eval.json").read_text())
    return {"cfg": cfg, "rows": {(r["model"], r["nfe"]): r for r in data["rows"]}, "eval": data}


@pytest.fixture(scope="session")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("digits-gates"))


def test_teacher_samples_are_the_requested_digits(root):
    rows = distilled("progressive", root)["rows"]
    teacher50 = rows["teacher", 50]
    assert teacher50["class_accuracy"] >= 0.90, teacher50
    assert teacher50["fid_train"] < rows["teacher", 4]["fid_train"] < rows["teacher", 1]["fid_train"]
    assert distilled("progressive", root)["eval"]["feature_net_test_accuracy"] >= 0.95
    # against the held-out images KID's 95% intervals (jackknife, 500 samples, 359 held-out
    # images) tell 1 from 4 steps, not 4 from 50: 317 ± 20, 35 ± 16, 14 ± 12 when written (floor
    # 3.6 ± 15), where FID against the training images reads 114 / 12 / 8.7
    kid = {n: rows["teacher", n]["kid_ci"] for n in (1, 4, 50)}
    print(f"digits teacher KID intervals at 1 / 4 / 50 steps: {kid}; floor {distilled('progressive', root)['eval']['floor']}")
    assert kid[4][1] < kid[1][0] and rows["teacher", 50]["kid"] < rows["teacher", 4]["kid"], kid


def test_progressive_four_step_student(root):
    rows = distilled("progressive", root)["rows"]
    student, teacher4, teacher50 = rows["student", 4], rows["teacher", 4], rows["teacher", 50]
    assert student["fid_train"] <= 1.5 * teacher50["fid_train"], (student["fid_train"], teacher50["fid_train"])
    assert student["fid_train"] < teacher4["fid_train"], (student["fid_train"], teacher4["fid_train"])
    assert student["class_accuracy"] >= 0.85, student


def test_ode_pairs_one_step_student(root):
    rows = distilled("ode-pairs", root)["rows"]
    student, teacher1, teacher50 = rows["student", 1], rows["teacher", 1], rows["teacher", 50]
    print(f"ode-pairs 1-step FID {student['fid_train']:.2f} vs teacher {teacher1['fid_train']:.1f} / "
          f"{teacher50['fid_train']:.2f} at 1 / 50; class accuracy {student['class_accuracy']:.3f}")
    assert student["fid_train"] <= teacher1["fid_train"] / 3, (student["fid_train"], teacher1["fid_train"])
    assert student["fid_train"] <= 2 * teacher50["fid_train"], (student["fid_train"], teacher50["fid_train"])
    assert student["class_accuracy"] >= 0.85, student


def test_reflow_one_step_student_on_straighter_paths(root):
    run = distilled("reflow", root)
    rows, straightness = run["rows"], run["eval"]["straightness"]
    student, teacher1, teacher50 = rows["student", 1], rows["teacher", 1], rows["teacher", 50]
    print(f"reflow 1-step FID {student['fid_train']:.2f} vs teacher {teacher1['fid_train']:.1f} / {teacher50['fid_train']:.2f} at 1 / 50; "
          f"straightness {straightness['student']:.4f} vs {straightness['teacher']:.4f}")
    assert student["fid_train"] <= teacher1["fid_train"] / 3, (student["fid_train"], teacher1["fid_train"])
    assert student["fid_train"] <= 2 * teacher50["fid_train"], (student["fid_train"], teacher50["fid_train"])
    assert student["class_accuracy"] >= 0.85, student
    assert straightness["student"] <= straightness["teacher"] / 3, straightness


@pytest.mark.parametrize(("method", "steps"), [("mdt", 1), ("boot", 1), ("slimflow", 1), ("instaflow", 1), ("cd", 1),
                                             ("tscd", 1), ("scm", 1), ("meanflow", 1), ("mcd", 2),
                                             ("flow-map", 1)])
def test_student_meets_the_digits_bounds_at_its_steps(method, steps, root):
    """Issue 4's digits gate at a method's headline steps (one, or mcd's 2 segments): >= 3x
    better than the teacher at as many steps and within 2x of its 50 steps, with the requested
    digits (boot never reads a training image; slimflow's student starts from random weights)."""
    rows = distilled(method, root)["rows"]
    student, teacher, teacher50 = rows["student", steps], rows["teacher", steps], rows["teacher", 50]
    print(f"{method} {steps}-step FID {student['fid_train']:.2f} vs teacher {teacher['fid_train']:.1f} / {teacher50['fid_train']:.2f} "
          f"at {steps} / 50")
    assert student["fid_train"] <= teacher["fid_train"] / 3, (student["fid_train"], teacher["fid_train"])
    assert student["fid_train"] <= 2 * teacher50["fid_train"], (student["fid_train"], teacher50["fid_train"])
    assert student["class_accuracy"] >= 0.85, student


def test_slimflow_student_has_at_most_a_third_of_the_teachers_parameters(root):
    from distill.diffusion.export import load_denoiser

    run = distilled("slimflow", root)
    student, _ = load_denoiser(Path(root) / "slimflow" / "student")
    teacher, _ = run["cfg"].teacher.load()
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(student) <= count(teacher) / 3, (count(student), count(teacher))


def test_dpm_solver_beats_euler_on_the_digits_teacher(root):
    """At 10 steps DPM-Solver++(2M) lands closer to the 50-step Heun solution than Euler
    (64 images; mean error 0.259 vs 0.400 when written, and 0.264 vs 0.406 against 100 Heun
    steps on 128 images, the earlier, 3.5x slower setting)."""
    teacher, _ = distilled("progressive", root)["cfg"].teacher.load()
    noise, labels = fixed_noise(64, (1, 8, 8), seed=7), torch.arange(64) % 10
    with torch.inference_mode():
        reference = sample(teacher, noise, 50, "heun", cond=labels)
        errors = {s: float((sample(teacher, noise, 10, s, cond=labels) - reference).flatten(1)
                           .norm(dim=1).mean()) for s in ("euler", "dpm++2m")}
    assert errors["dpm++2m"] < errors["euler"], errors
