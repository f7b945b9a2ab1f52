"""Gate: token-level KD from the real SmolLM2-135M-Instruct teacher beats cross-entropy.

The recipes configs/lm/lm-kd-smollm2.yaml and lm-ce-smollm2.yaml run shortened (GATE below:
64 steps of 8 blocks of 32 tokens, 96 training blocks, cached top-64 teacher targets) and the
two students — same architecture, init, tokens and steps — are compared on 16 held-out
python-docs blocks. Cross-entropy gets its own learning-rate sweep (it overfits the 96 blocks
at the recipes' 3e-3), and each of kd's figures is compared with CE's best over the sweep.
Measured (one thread, as under xdist): kd at the recipe's lr 3e-3 perplexity 780,
KL(teacher || student) 3.55 nats per token, draft acceptance 15.7% (teacher perplexity 61.0);
CE at lr 1e-3 / 3e-3 / 1e-2: perplexity 2070 / 3088 / 4894, KL 4.49 / 5.03 / 5.53, acceptance
10.7% / 12.0% / 11.7% (3e-4: 16098, 6.39, 4.9%).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import load_config
from distill.runner import run

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "lm"
GATE = ["train.steps=64", "train.warmup_steps=5", "train.batch_size=8", "data.block_size=32",
        "data.max_train_blocks=96", "data.max_test_blocks=16", "train.progress=false",
        "eval.timing_repeats=0"]


def student_row(recipe: str, out: Path, *overrides: str) -> dict:
    result = run(load_config(CONFIGS / f"{recipe}-smollm2.yaml", [*GATE, *overrides]),
                 out / "".join([recipe, *overrides]))
    rows = {r["model"]: r for r in result.rows}
    print(recipe, {k: round(v, 4) for k, v in rows["student"].items() if isinstance(v, float)},
          "teacher perplexity", round(rows["teacher"]["perplexity"], 2))
    return rows["student"]


# the baseline's best learning rates: 3e-4 and 1e-2 were worse on every figure (docstring)
CE_LRS = ("1e-3", "3e-3")


@pytest.mark.gate("lm-kd")
def test_kd_from_smollm2_beats_cross_entropy_at_its_best_learning_rate(tmp_path: Path):
    kd = student_row("lm-kd", tmp_path)
    ce = [student_row("lm-ce", tmp_path, f"train.lr={lr}") for lr in CE_LRS]
    best = {key: pick(r[key] for r in ce) for key, pick in
            (("kl_to_teacher", min), ("perplexity", min), ("acceptance_rate", max))}
    assert kd["kl_to_teacher"] <= best["kl_to_teacher"] - 0.5, (kd, best)
    assert kd["perplexity"] <= 0.8 * best["perplexity"], (kd, best)
    # as a speculative-decoding draft of the teacher, the distilled student is accepted more
    assert kd["acceptance_rate"] >= best["acceptance_rate"] + 0.02, (kd, best)
    assert (tmp_path / "lm-kd" / "student" / "model.safetensors").is_file()
    assert (tmp_path / "lm-kd" / "teacher-cache" / "manifest.json").is_file()


# DistillSpec (issue 7): the truncated-teacher draft of configs/lm/distillspec-draft-smollm2.yaml
# at the gate's settings, 128 steps (docs/methods.md#distillspec: 9.3% untrained -> 25.4%, 720 s on
# one thread; `slow`, so `make test-all` only).
DRAFT_GATE = [*GATE, "train.steps=128", "train.lr=3e-3", "student.layers=2"]


@pytest.mark.gate
@pytest.mark.slow
def test_distillspec_raises_the_draft_acceptance_by_10_points(tmp_path: Path):
    """The draft's teacher-forced acceptance rate 1 - E[TVD(p_teacher, p_draft)] on held-out
    blocks rises by at least 10 points (absolute) over the same draft before training."""
    from distill.metrics.lm import lm_scores

    cfg = load_config(CONFIGS / "distillspec-draft-smollm2.yaml", DRAFT_GATE)
    teacher, meta = cfg.teacher.load()
    data = cfg.data.build_tokens(meta["tokenizer"])
    untrained = cfg.student.build_lm(teacher, meta["tokenizer"], cfg.train.seed)
    before = lm_scores({"teacher": teacher, "student": untrained}, data.test_ids, data.test_mask)["student"]
    rows = {r["model"]: r for r in run(cfg, tmp_path / "distillspec").rows}
    after = rows["student"]
    print(f"distillspec draft acceptance {before['acceptance_rate']:.3f} untrained -> "
          f"{after['acceptance_rate']:.3f} after {cfg.train.steps} steps")
    assert after["acceptance_rate"] >= before["acceptance_rate"] + 0.10, (before, after)
