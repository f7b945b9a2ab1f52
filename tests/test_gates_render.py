"""Gates: `sds` (DreamFusion's score distillation) optimises a 2-D Gaussian-splat renderer
(12 splats, 4 renders per class) through the class-conditional digits teacher
(configs/digits/sds-digits.yaml, the MLP teacher recipe). Scored on the 40 renders: the digits
feature classifier's reading of the prompted class, and KID in its features against the
held-out images (with its 95% jackknife interval); for `vsd-render` (ProlificDreamer),
the diversity of one class's renders: recall, and `spread` (their mean pixel distance); for
`prd` (progressive rendering distillation), a generator of renders against per-sample SDS."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest

from conftest import CONFIGS
from distill.config import load_config
from distill.runner import run

pytestmark = pytest.mark.gate

UNGUIDED = ("method.guidance=1",)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("render-gate-runs"))


@cache
def render_rows(root: str, variant: tuple[str, ...] = (), method: str = "sds") -> dict[str, dict]:
    """The `method`-digits recipe with `variant`'s overrides: its eval rows by model."""
    cfg = load_config(CONFIGS.parent / "digits" / f"{method}-digits.yaml", ["train.progress=false", *variant])
    tag = "".join("-" + re.sub(r"\W+", "", o) for o in variant)
    result = run(cfg, Path(root) / f"{method}{tag}")
    rows = json.loads((result.run_dir / "eval.json").read_text())["rows"]
    found = {r["model"]: r for r in rows}
    print(method, variant, {m: (r["class_accuracy"], round(r["kid"], 1), round(r["recall"], 3),
                                round(r["spread"], 3)) for m, r in found.items()})
    return found


def check_sds(root: str, base: tuple[str, ...] = ()) -> None:
    """The renders show their prompted class (>= 90%, from the random splats' chance level),
    and classifier-free guidance, DreamFusion's requirement, is what makes them look like
    digits: without it (guidance 1) KID is significantly worse, by >= 2x."""
    guided, unguided = render_rows(root, base), render_rows(root, (*base, *UNGUIDED))
    renders, initial = guided["renders"], guided["initial"]
    assert renders["class_accuracy"] >= 0.9 and initial["class_accuracy"] <= 0.25
    assert renders["kid_ci"][1] < unguided["renders"]["kid_ci"][0]
    assert 2 * renders["kid"] <= unguided["renders"]["kid"]


@pytest.mark.gate("sds")
def test_sds_renders_show_the_prompted_class_and_need_guidance(root):
    """Seed 0, 500 steps: class accuracy 100% (initial splats 5%), KID 57.2 against 436.2
    without guidance (which still reads as the class: 100%, but as blobs). Guidance 3: 44.4."""
    check_sds(root)


@pytest.mark.slow
def test_sds_gate_at_another_seed(root):
    """Seed 1: 100%, KID 46.3 against 482.6 without guidance."""
    check_sds(root, ("train.seed=1",))


def check_vsd(root: str, base: tuple[str, ...] = ()) -> None:
    """VSD's renders show their class as SDS's do, and are more diverse: the learned score of
    the renders (SDS's ε, a point mass, in its place) keeps a class's particles apart. Spread
    >= 1.3x and recall >= 1.5x SDS's at the same seed."""
    vsd, sds = render_rows(root, base, "vsd-render")["renders"], render_rows(root, base)["renders"]
    assert vsd["class_accuracy"] >= 0.9
    assert vsd["spread"] >= 1.3 * sds["spread"] and vsd["recall"] >= 1.5 * sds["recall"]


@pytest.mark.gate("vsd-render")
def test_vsd_renders_are_as_recognisable_as_sds_and_more_diverse(root):
    """Seed 0: class accuracy 100% for both; spread 2.755 against SDS's 1.688, recall 0.652
    against 0.201 (KID 21.0 against 57.2, inside each other's 40-sample intervals). Tuned here:
    the fake score's lr (train.lr 0.03: KID 238.1, recall 0.462; 1e-4: 34.4, 0.638)."""
    check_vsd(root)


@pytest.mark.slow
def test_vsd_gate_at_another_seed(root):
    """Seed 1: spread 2.675 against 1.886, recall 0.507 against 0.290 (KID 47.9 against 46.3)."""
    check_vsd(root, ("train.seed=1",))


@pytest.mark.slow
def test_sds_renders_show_the_prompted_class_on_16x16_digits(root):
    """Not tuned here: 16x16 digits (the MLP teacher and the feature classifier retrained at
    that size), the recipe unchanged. Class accuracy 100% (initial 20%). Guidance's KID gain
    does not carry over: 1280.5 guided against 633.9 without (32 splats: 3407.6 against
    558.0), so only the class reading is asserted here."""
    rows = render_rows(root, ("data.size=16", "teacher.overrides=[data.size=16]"))
    assert rows["renders"]["class_accuracy"] >= 0.9 and rows["initial"]["class_accuracy"] <= 0.25


@pytest.mark.slow
def test_sds_gate_through_the_unet_teacher(root):
    """Not tuned here: the UNet digits teacher (its recipe at 800 steps) in place of the MLP.
    Class accuracy 100%; KID 129.6 (95% 37.4-221.8) against 341.2 (244.0-438.5) without guidance."""
    check_sds(root, ("teacher.config=teacher-digits.yaml", "teacher.overrides=[train.steps=800]"))



def check_prd(root: str, base: tuple[str, ...] = ()) -> None:
    """PRD's generator, trained by score distillation alone, renders new prompts in 4 forward
    passes (no teacher call, no optimisation) that show their class (>= 90%, from the untrained
    generator's chance level) at <= 1.3x the FID of per-sample SDS at the same seed and number
    of renders; SDS spends 500 optimisation steps of the guided teacher on each render."""
    prd, sds = render_rows(root, base, "prd"), render_rows(root, base)["renders"]
    assert prd["renders"]["class_accuracy"] >= 0.9 and prd["initial"]["class_accuracy"] <= 0.25
    assert prd["renders"]["fid"] <= 1.3 * sds["fid"]


@pytest.mark.gate("prd")
def test_prd_generator_renders_the_class_in_four_passes_near_per_sample_sds(root):
    """40 renders, 1000 steps, seeds 0 / 1 / 2: class accuracy 100% at every seed; FID 86.3 /
    92.8 / 107.1 against SDS's 98.3 / 93.0 / 113.4 (0.88x / 1.00x / 0.94x). At 200 renders
    (student.per_class=20, which also draws other initial weights): 129.3 / 94.0 / 101.5 against
    90.0-92.1 (1.40x / 1.06x / 1.13x; the mean 1.20x): the seed-to-seed spread of the
    generator's FID is wide. Its renders of one class are alike (spread 0.20 against SDS's
    1.69, recall 0): amortised SDS seeks the teacher's mode as per-sample SDS does."""
    check_prd(root)


@pytest.mark.slow
def test_prd_gate_at_another_seed(root):
    """Seed 1: FID 92.8 against SDS's 93.0."""
    check_prd(root, ("train.seed=1",))


MANY = ("student.per_class=20",)  # 200 renders: FID at 40 moves by ~10 between seeds


def mean_fid(root: str, method: str, variant: tuple[str, ...]) -> float:
    fids = [render_rows(root, (*variant, f"train.seed={seed}"), method)["renders"]["fid"] for seed in range(3)]
    return sum(fids) / len(fids)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "the progressive training does not beat its one-part ablation at this scale: at 200 renders "
    "one-step amortised SDS (method.parts=1, sampled in 1 pass) scores FID 95.4 / 104.4 / 103.1 "
    "at seeds 0 / 1 / 2 (mean 101.0) against PRD's 4-part, 4-pass 129.3 / 94.0 / 101.5 (mean "
    "108.3); at 40 renders the means flip (108.7 against 95.4), inside the seeds' spread: a "
    "12-splat 8x8 render needs no refinement steps. The paper's gain is on triplanes decoded "
    "from Stable Diffusion latents"))
def test_prd_progressive_steps_beat_the_one_step_amortised_generator(root):
    one_part = ("method.parts=1", "student.sample_steps=1")
    assert mean_fid(root, "prd", MANY) <= 0.9 * mean_fid(root, "prd", (*MANY, *one_part))
