"""LM runs end to end on a tiny teacher folder (a random Llama + a word-level tokenizer saved
with save_pretrained): train, export, evaluate, resume, the cache-teacher command, and the
errors for broken teacher files and wrong sections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from typer.testing import CliRunner

from distill.cli import app
from distill.config import load_config
from distill.errors import CheckpointError, ConfigError, DataError, ModelMismatchError
from distill.runner import run

WORDS = ("the cat sat on a mat and the dog ran to the red house while birds sang in old green "
         "trees near quiet water").split()


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("lm")
    gen = torch.Generator().manual_seed(0)
    docs = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (30,), generator=gen).tolist())
            for _ in range(40)]
    (root / "corpus.txt").write_text("\n\n".join(docs))
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(docs, trainers.WordLevelTrainer(special_tokens=["[UNK]", "<eos>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="[UNK]")
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=64, eos_token_id=tokenizer.eos_token_id))
    teacher.save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    (root / "run.yaml").write_text(
        "name: tiny-lm\n"
        f"data: {{name: text, path: {root / 'corpus.txt'}, block_size: 16}}\n"
        f"teacher: {{name: causal-lm, path: {root / 'teacher'}}}\n"
        "student: {name: llama, layers: 1, hidden: 16, heads: 2, intermediate: 32}\n"
        "method: {name: lm-kd, signal: cache, top_k: 4, alpha: 0.5}\n"
        "train: {steps: 6, batch_size: 4, lr: 1.0e-2, checkpoint_every: 3, progress: false}\n"
        "eval: {timing_repeats: 1}\n")
    return root


def test_tiny_lm_run_trains_exports_evaluates_and_resumes(lm_files: Path, tmp_path: Path):
    cfg = load_config(lm_files / "run.yaml")
    result = run(cfg, tmp_path / "run")
    rows = {r["model"]: r for r in result.rows}
    assert set(rows) == {"teacher", "student"}
    assert rows["student"]["kl_to_teacher"] >= 0 and rows["student"]["perplexity"] > 1
    assert rows["student"]["tokens_per_sec"] > 0
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "student")
    assert student.config.num_hidden_layers == 1
    eval_json = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert eval_json["family"] == "lm" and eval_json["n_tokens"] > 0
    html = (tmp_path / "run" / "report.html").read_text()
    assert "perplexity" in html and "KL(teacher || student)" in html
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/student/kd", "loss/student/ce"} <= set(log[-1])
    # `distill eval` / `distill report` find the lm task from the export and eval.json
    (tmp_path / "run" / "report.html").unlink()
    assert CliRunner().invoke(app, ["eval", str(tmp_path / "run")]).exit_code == 0
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["rows"][1]["perplexity"] == pytest.approx(
        rows["student"]["perplexity"])
    assert CliRunner().invoke(app, ["report", str(tmp_path / "run")]).exit_code == 0
    assert "KL(teacher || student)" in (tmp_path / "run" / "report.html").read_text()
    again = run(load_config(lm_files / "run.yaml", ["train.steps=8"]), tmp_path / "run")
    assert again.rows  # resumed from step 6 (checkpoint with tied weights) and went on to 8
    state = json.loads(next((tmp_path / "run" / "checkpoints").glob("step-*8/trainer_state.json")).read_text())
    assert state["step"] == 8


def test_cache_teacher_command_then_train_from_it(lm_files: Path, tmp_path: Path):
    out = tmp_path / "cache"
    result = CliRunner().invoke(app, ["lm", "cache-teacher", str(lm_files / "run.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "top-4" in result.output and (out / "manifest.json").is_file()
    cfg = load_config(lm_files / "run.yaml", [f"method.cache_dir={out}", "train.steps=2"])
    run(cfg, tmp_path / "run", evaluate=False)
    assert not (tmp_path / "run" / "teacher-cache").exists()
    other = CliRunner().invoke(app, ["lm", "cache-teacher", str(lm_files / "run.yaml"), "--out", str(out),
                                     "method.top_k=8"])
    assert other.exit_code == 2 and "never mixed" in other.output


def test_truncated_teacher_weights_name_the_folder(lm_files: Path, tmp_path: Path):
    broken = tmp_path / "teacher"
    broken.mkdir()
    for f in (lm_files / "teacher").iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data[: len(data) // 2] if f.suffix == ".safetensors" else data)
    cfg = load_config(lm_files / "run.yaml", [f"teacher.path={broken}"])
    with pytest.raises(CheckpointError, match=str(broken)):
        run(cfg, tmp_path / "run")


@pytest.mark.parametrize("override, match", [
    ("student={name: mlp}", "student.name must be llama"),
    ("teacher={name: recipe, config: teacher-8gaussians.yaml}", "causal-LM teacher"),
    ("data={name: 8gaussians}", "data.name must be text"),
])
def test_lm_methods_refuse_other_sections(lm_files: Path, tmp_path: Path, override: str, match: str):
    cfg = load_config(lm_files / "run.yaml", [override])
    with pytest.raises(ConfigError, match=match):
        run(cfg, tmp_path / "run")


def test_assisted_generation_is_measured_and_reported(lm_files: Path, tmp_path: Path):
    cfg = load_config(lm_files / "run.yaml", ["eval.assisted={prompts: 2, prompt_tokens: 6, gamma: 3, new_tokens: 8}"])
    rows = {r["model"]: r for r in run(cfg, tmp_path / "run").rows}
    student = rows["student"]
    assert 0.0 <= student["assisted_acceptance"] <= 1.0
    assert 1.0 <= student["assisted_tokens_per_call"] <= 4.0
    assert "assisted_acceptance" not in rows["teacher"]
    eval_json = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert eval_json["assisted"]["gamma"] == 3 and "assisted_acceptance" in eval_json["metrics"]
    assert "measured in assisted generation" in (tmp_path / "run" / "report.html").read_text()


@pytest.mark.parametrize("override, match", [
    ("eval.assisted={prompt_tokens: 16}", "shorter than data.block_size=16"),
    ("eval.assisted={prompt_tokens: 8, new_tokens: 4000}", "student.max_positions"),
])
def test_assisted_settings_are_checked_before_training(lm_files: Path, tmp_path: Path, override: str, match: str):
    with pytest.raises(ConfigError, match=match):
        run(load_config(lm_files / "run.yaml", [override]), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_assisted_on_a_non_lm_run_is_a_config_error(tmp_path: Path):
    from conftest import tiny_teacher_yaml

    cfg = load_config(tiny_teacher_yaml(tmp_path / "t.yaml"), ["eval.assisted={}"])
    with pytest.raises(ConfigError, match="eval.assisted"):
        run(cfg, tmp_path / "run")


def test_student_init_from_a_trained_run(lm_files: Path, tmp_path: Path):
    base = run(load_config(lm_files / "run.yaml", ["train.steps=2"]), tmp_path / "base", evaluate=False)
    trained = AutoModelForCausalLM.from_pretrained(base.run_dir / "student")
    cfg = load_config(lm_files / "run.yaml", [f"student.init_from={base.run_dir}", "train.steps=1",
                                              "train.lr=1.0e-12"])
    again = run(cfg, tmp_path / "again", evaluate=False)
    tuned = AutoModelForCausalLM.from_pretrained(again.run_dir / "student")
    assert torch.allclose(tuned.lm_head.weight, trained.lm_head.weight, atol=1e-6)
    wider = load_config(lm_files / "run.yaml", [f"student.init_from={base.run_dir}", "student.hidden=32"])
    with pytest.raises(ModelMismatchError, match="hidden_size: 16 there vs 32 here"):
        run(wider, tmp_path / "wider")
    # a student with another tokenizer is refused, even with the same architecture
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(w.upper() for w in WORDS)], trainers.WordLevelTrainer(
        special_tokens=["[UNK]", "<eos>"]))
    foreign = tmp_path / "foreign"
    trained.save_pretrained(foreign)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="[UNK]").save_pretrained(foreign)
    other = load_config(lm_files / "run.yaml", [f"student.init_from={foreign}"])
    with pytest.raises(ModelMismatchError, match="cross-tokenizer"):
        run(other, tmp_path / "other")


def test_student_init_from_a_padded_vocabulary_needs_truncate_vocab(lm_files: Path, tmp_path: Path):
    base = run(load_config(lm_files / "run.yaml", ["train.steps=2"]), tmp_path / "base", evaluate=False)
    trained = AutoModelForCausalLM.from_pretrained(base.run_dir / "student")
    rows = trained.lm_head.weight.shape[0]
    trained.resize_token_embeddings(rows + 5, mean_resizing=False)  # padding rows beyond the tokenizer's ids
    padded = tmp_path / "padded"
    trained.save_pretrained(padded)
    PreTrainedTokenizerFast.from_pretrained(lm_files / "teacher").save_pretrained(padded)
    plain = load_config(lm_files / "run.yaml", [f"student.init_from={padded}"])
    with pytest.raises(ModelMismatchError, match="student.truncate_vocab: true"):
        run(plain, tmp_path / "plain")
    cfg = load_config(lm_files / "run.yaml", [f"student.init_from={padded}", "student.truncate_vocab=true",
                                              "train.steps=1", "train.lr=1.0e-12"])
    tuned = AutoModelForCausalLM.from_pretrained(run(cfg, tmp_path / "cut", evaluate=False).run_dir / "student")
    assert tuned.lm_head.weight.shape[0] == rows
    assert torch.allclose(tuned.lm_head.weight, trained.lm_head.weight[:rows], atol=1e-6)
    with pytest.raises(ConfigError, match="truncate_vocab applies to a student started from init_from"):
        load_config(lm_files / "run.yaml", ["student.truncate_vocab=true"])


def test_generate_then_seq_kd_and_resume_after_a_cut_line(lm_files: Path, tmp_path: Path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat\n\nthe dog ran\na red house\n")
    out = tmp_path / "gens.jsonl"
    args = ["lm", "generate", str(lm_files / "run.yaml"), "--prompts", str(prompts), "--out", str(out),
            "--max-new-tokens", "12"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[1])["prompt"].startswith("the dog")
    out.write_text(out.read_text()[:-10])  # a kill in the middle of the last line
    assert CliRunner().invoke(app, args).exit_code == 0
    assert out.read_text().splitlines() == lines  # the cut line was written again, the same
    other = CliRunner().invoke(app, [*args, "--temperature", "0.3"])
    assert other.exit_code == 2 and "another teacher or settings" in other.output
    cfg = load_config(lm_files / "run.yaml", ["method={name: seq-kd}", f"data.path={out}",
                                              "data.test_fraction=0.34", "train.steps=2", "train.batch_size=1"])
    result = run(cfg, tmp_path / "seq", evaluate=False)
    assert (result.run_dir / "student" / "model.safetensors").is_file()
    plain = load_config(lm_files / "run.yaml", ["method={name: seq-kd}"])
    with pytest.raises(ConfigError, match="distill lm generate"):
        run(plain, tmp_path / "plain")


def test_prompt_longer_than_the_context_and_bad_prompt_files(lm_files: Path, tmp_path: Path):
    from distill.lm.generate import read_prompts

    prompts = tmp_path / "long.txt"
    prompts.write_text(" ".join(["the"] * 60) + "\n")
    result = CliRunner().invoke(app, ["lm", "generate", str(lm_files / "run.yaml"), "--prompts", str(prompts),
                                      "--out", str(tmp_path / "g.jsonl"), "--max-new-tokens", "12"])
    assert result.exit_code == 2 and "exceeds the teacher's context of 64" in result.output
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"text": "no prompt key"}\n')
    with pytest.raises(DataError, match="line 1"):
        read_prompts(bad)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no prompt"):
        read_prompts(tmp_path / "empty.txt")


def test_taid_and_the_teacher_hacking_monitor_are_logged_checkpointed_and_reported(lm_files: Path, tmp_path: Path):
    cfg = load_config(lm_files / "run.yaml", ["method.taid={t_start: 0.4, alpha: 0.1}", "method.signal=dense",
                                              "method.alpha=1.0", "method.monitor_every=2",
                                              "method.monitor_blocks=2", "train.log_every=2"])
    run(cfg, tmp_path / "run")
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-00000006" / "trainer_state.json").read_text())
    t = state["method"]["taid"]["t"]
    assert 0.4 < t <= 1.0
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["taid/t"] == pytest.approx(t, rel=0.2)  # averaged over the last two steps
    assert sum("monitor/proxy_kl" in row for row in log) == 3
    verdict = json.loads((tmp_path / "run" / "eval.json").read_text())["teacher_hacking"]
    assert verdict["steps"] == [2, 4, 6] and isinstance(verdict["hacking"], bool)
    assert "teacher hacking" in (tmp_path / "run" / "report.html").read_text()
