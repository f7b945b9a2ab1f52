"""Gates: `sds` (DreamFusion's score distillation) optimises a 2-D Gaussian-splat renderer
(12 splats, 4 renders per class) through the class-conditional digits teacher
(configs/digits/sds-digits.yaml, the MLP teacher recipe). Scored on the 40 renders: the digits
feature classifier's reading of the prompted class, and KID in its features against the
held-out images (with its 95% jackknife interval); for `vsd-render` (ProlificDreamer),
the diversity of one class's renders: recall, and `spread` (their mean pixel distance)."""

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
