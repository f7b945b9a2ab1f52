"""Fast gates for the LM methods that need teacher or student generations (seq-kd, on-policy,
distillspec), on a language the test makes: documents of a first-order Markov chain over 40
words (each word has 4 successors, probabilities 0.55 / 0.25 / 0.15 / 0.05), a 2-layer Llama
teacher trained on 2,000 fresh chain documents (~10 s), and a 1-layer student (hidden 32) that
sees only a 200-document corpus (160 to train on, 40 held out). SmolLM2 is too slow on CPU for
generation-based methods in CI; its gates are in test_gates_lm.py.

Every student trains 400 steps at batch 16 and is scored by the teacher on its own samples
(16 continuations of each held-out block's first 2 tokens, sampled at temperature 1): KL(teacher
|| student) per sampled token, and the acceptance rate 1 - TVD(teacher, student) there, which
is the expected acceptance of its proposals as a speculative-decoding draft. The baseline is
cross-entropy on the corpus at its best learning rate of 1e-3 / 3e-3 / 1e-2 (1e-3 everywhere:
the corpus is small and higher rates overfit it). The margins are set from three draws of the
world (the corpus and the teacher's data: seeds 0 / 10 / 20 and 1 / 11 / 21; this file uses
the first), student seed 0:

- CE at 1e-3: own-sample KL 0.277 / 0.266 / 0.264, acceptance 0.775 / 0.776 / 0.773;
- `seq-kd` on 600 sampled teacher completions of the corpus's prompts: KL 0.225 / 0.207 /
  0.199 (0.81 / 0.78 / 0.75 of CE's), acceptance 0.801 / 0.819 / 0.819 (+0.026 / +0.043 /
  +0.046);
- `on-policy` (GKD, JSD, every batch the student's own samples): KL 0.0589 / 0.0590 / 0.0444;
  its ablation, the same loss on the corpus text only (on_policy_fraction 0): 0.0648 / 0.0881
  / 0.0715 (ratios 0.91 / 0.67 / 0.62; on a fourth world at student seeds 0-2: 0.79 / 0.69 /
  0.64);
- `distillspec` (TVD on the draft's own samples): acceptance 0.900 / 0.892 / 0.904 (+0.125 /
  +0.116 / +0.131 over CE). Its on-policy data does not matter here: off-policy TVD scores the
  same (`slow`, xfail(strict) below, with the numbers of the fourth world).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch

from distill.config import load_config
from distill.lm.generate import generate_completions
from distill.lm.on_policy import sample_continuations
from distill.metrics.lm import lm_scores
from distill.runner import run

pytestmark = pytest.mark.gate

VOCAB, DOCS, WORDS_PER_DOC = 40, 200, 24
SUCCESSOR_PROBS = torch.tensor([0.55, 0.25, 0.15, 0.05])
STEPS = 400
SAMPLES = 16  # continuations of each held-out prompt the teacher scores
CE_LRS = ("1e-3", "3e-3", "1e-2")


def chain_documents(n: int, seed: int) -> list[str]:
    """n documents of the Markov chain (its transition table fixed by seed 1234)."""
    table = torch.Generator().manual_seed(1234)
    successors = torch.stack([torch.randperm(VOCAB, generator=table)[:4] for _ in range(VOCAB)])
    gen = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(n):
        word = int(torch.randint(0, VOCAB, (1,), generator=gen))
        words = [word]
        for _ in range(WORDS_PER_DOC - 1):
            word = int(successors[word][torch.multinomial(SUCCESSOR_PROBS, 1, generator=gen)])
            words.append(word)
        docs.append(" ".join(f"w{i}" for i in words))
    return docs


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The corpus, the trained teacher folder, the base config and the teacher's completions."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("lm-synthetic")
    corpus = chain_documents(DOCS, seed=0)
    (root / "corpus.txt").write_text("\n\n".join(corpus))
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([f"w{i}" for i in range(VOCAB)],
                            trainers.WordLevelTrainer(special_tokens=["[UNK]", "<eos>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="[UNK]")
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, eos_token_id=tokenizer.eos_token_id))
    ids = torch.tensor([tokenizer(d)["input_ids"] for d in chain_documents(2000, seed=1)])
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    for _ in range(400):
        batch = ids[torch.randint(0, len(ids), (32,))]
        loss = teacher(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    teacher.save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    (root / "base.yaml").write_text(
        "name: lm-synthetic\n"
        f"data: {{name: text, path: {root / 'corpus.txt'}, block_size: 16, test_fraction: 0.2}}\n"
        f"teacher: {{name: causal-lm, path: {root / 'teacher'}}}\n"
        "student: {name: llama, layers: 1, hidden: 32, heads: 2, intermediate: 64}\n"
        "method: {name: lm-ce}\n"
        f"train: {{steps: {STEPS}, batch_size: 16, lr: 1.0e-3, progress: false}}\n"
        "eval: {timing_repeats: 0}\n")
    cfg = load_config(root / "base.yaml")
    teacher_model, meta = cfg.teacher.load()
    completions = root / "completions.jsonl"
    prompts = [" ".join(doc.split()[:2]) for doc in corpus] * 3
    generate_completions(teacher_model, meta["tokenizer"], prompts, completions,
                         max_new_tokens=WORDS_PER_DOC - 2, temperature=1.0, seed=0)
    return {"root": root, "teacher": teacher_model, "meta": meta,
            "data": cfg.data.build_tokens(meta["tokenizer"]), "completions": completions}


def own_sample_scores(world: dict, student: torch.nn.Module) -> dict[str, float]:
    """KL(teacher || student) and acceptance 1 - TVD per token of the student's own samples:
    SAMPLES continuations (temperature 1, seed 99) of every held-out block's first 2 tokens."""
    from transformers import AutoModelForCausalLM  # noqa: F401  (the export loads with it)

    torch.manual_seed(99)
    ids, mask = sample_continuations(student, world["data"].test_ids.repeat(SAMPLES, 1), 2, 1.0,
                                     world["meta"]["tokenizer"].eos_token_id)
    scores = lm_scores({"teacher": world["teacher"], "student": student}, ids, mask)["student"]
    return {"kl": scores["kl_to_teacher"], "acceptance": scores["acceptance_rate"]}


@cache
def _student(root: Path, name: str, overrides: tuple[str, ...]) -> Path:
    return run(load_config(root / "base.yaml", list(overrides)), root / name).run_dir / "student"


def student_scores(world: dict, name: str, *overrides: str) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(_student(world["root"], name, overrides))
    scores = own_sample_scores(world, student)
    print(name, {k: round(v, 4) for k, v in scores.items()})
    return scores


def best_cross_entropy(world: dict) -> dict[str, float]:
    """The CE student's best own-sample KL and acceptance over its learning-rate sweep."""
    runs = [student_scores(world, f"ce-{lr}", f"train.lr={lr}") for lr in CE_LRS]
    return {"kl": min(r["kl"] for r in runs), "acceptance": max(r["acceptance"] for r in runs)}


ON_POLICY = "method={name: on-policy, signal: dense, prompt_tokens: 2, on_policy_fraction: %s}"
DISTILLSPEC = "method={name: distillspec, signal: dense, prompt_tokens: 2, on_policy_fraction: %s}"


@pytest.mark.gate("seq-kd")
def test_sequence_kd_student_generates_closer_to_the_teacher_than_cross_entropy(world):
    seq = student_scores(world, "seq-kd", "method={name: seq-kd}", f"data.path={world['completions']}")
    ce = best_cross_entropy(world)
    assert seq["kl"] <= 0.9 * ce["kl"], (seq, ce)
    assert seq["acceptance"] >= ce["acceptance"] + 0.015, (seq, ce)


@pytest.mark.gate("on-policy")
def test_on_policy_kd_lowers_the_divergence_on_the_students_own_samples(world):
    """GKD's claim: training on its own samples closes the train-inference mismatch."""
    on = student_scores(world, "on-policy", ON_POLICY % "1.0")
    off = student_scores(world, "off-policy", ON_POLICY % "0")
    ce = best_cross_entropy(world)
    assert on["kl"] <= 0.95 * off["kl"], (on, off)
    assert on["kl"] <= 0.5 * ce["kl"], (on, ce)


@pytest.mark.gate("distillspec")
def test_distillspec_draft_is_accepted_more_than_the_cross_entropy_draft(world):
    draft = student_scores(world, "distillspec", DISTILLSPEC % "1.0")
    ce = best_cross_entropy(world)
    assert draft["acceptance"] >= ce["acceptance"] + 0.08, (draft, ce)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "the draft's own samples do not help here: accepted 0.900 on-policy vs 0.897 off-policy "
    "(on_policy_fraction 0; the gate asks +0.01); on a fourth draw of the world (student seeds "
    "0-2, 4 samples a prompt) 0.907 / 0.907 / 0.916 vs 0.918 / 0.910 / 0.912"))
def test_distillspec_on_policy_data_beats_off_policy(world):
    on = student_scores(world, "distillspec", DISTILLSPEC % "1.0")
    off = student_scores(world, "distillspec-off", DISTILLSPEC % "0")
    assert on["acceptance"] >= off["acceptance"] + 0.01, (on, off)
