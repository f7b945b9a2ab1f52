"""The lm task: language-model distillation. Tokenizes the text with the teacher's tokenizer,
builds the Llama student, (for signal: cache) builds the teacher's top-k cache, exports the
trained student as a transformers folder, and evaluates it beside its teacher on the held-out
blocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from distill.data.text import TextDataConfig
from distill.errors import ConfigError, DataError
from distill.export_dir import META_FILE, staged_directory, write_text_atomic
from distill.lm.cache import build_topk_cache, cache_identity, load_topk_cache
from distill.lm.loading import load_causal_lm
from distill.lm.monitor import hacking_verdict
from distill.lm.report import lm_sections, lm_table
from distill.metrics.assisted import assisted_draft_stats
from distill.metrics.lm import lm_scores
from distill.models.causal_lm import LlamaStudentConfig
from distill.registry import METHODS, TASKS
from distill.report.html import write_report
from distill.task import Built, Task
from distill.teachers import load_configured_teacher
from distill.timing import best_seconds

FORMAT = "distill.causal-lm/v1"


def check_lm_config(cfg: Any) -> None:
    """The student, data and teacher sections an LM method needs (before anything loads)."""
    if not isinstance(cfg.student, LlamaStudentConfig):
        raise ConfigError(f"method {cfg.method.name!r} trains a causal LM: student.name must be "
                          f"llama, not {cfg.student.name!r}")
    if not isinstance(cfg.data, TextDataConfig):
        raise ConfigError(f"method {cfg.method.name!r} trains on text: data.name must be text, "
                          f"not {cfg.data.name!r}")
    if cfg.teacher is None or getattr(cfg.teacher, "name", None) not in ("smollm2", "causal-lm"):
        raise ConfigError(f"method {cfg.method.name!r} needs a causal-LM teacher section, e.g. "
                          "teacher: {name: smollm2} or teacher: {name: causal-lm, path: my-model/}")
    assisted = cfg.eval.assisted
    if assisted is not None:
        if assisted.prompt_tokens >= cfg.data.block_size:
            raise ConfigError(f"eval.assisted.prompt_tokens={assisted.prompt_tokens} must be shorter "
                              f"than data.block_size={cfg.data.block_size} (prompts are cut from "
                              "held-out blocks)")
        if assisted.prompt_tokens + assisted.new_tokens > cfg.student.max_positions:
            raise ConfigError(f"eval.assisted: prompt_tokens + new_tokens = "
                              f"{assisted.prompt_tokens + assisted.new_tokens} exceeds the student's "
                              f"student.max_positions={cfg.student.max_positions}; lower new_tokens")


def cache_teacher(cfg: Any, directory: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Build (or finish) the top-k teacher cache of an LM config's training blocks in
    `directory` (default: method.cache_dir); returns the directory and its manifest."""
    check_lm_config(cfg)
    if not hasattr(cfg.method, "top_k"):
        raise ConfigError(f"method {cfg.method.name!r} uses no teacher targets; give an lm-kd config")
    directory = directory or cfg.method.cache_dir
    if directory is None:
        raise ConfigError("say where the cache goes: --out DIR, or method.cache_dir in the config")
    teacher, meta = cfg.teacher.load()
    data = cfg.data.build_tokens(meta["tokenizer"])
    manifest = build_topk_cache(directory, teacher, data.train_ids, cfg.method.top_k,
                                progress=cfg.train.progress)
    return Path(directory), manifest


def build_lm(cfg: Any, run_dir: Path) -> Built:
    """Token data, frozen teacher, its metadata and the method for an LM config."""
    method_cls = METHODS.get(cfg.method.name)
    check_lm_config(cfg)
    teacher, meta = load_configured_teacher(cfg, "")
    method_cls.check_inputs(cfg, teacher)
    tokenizer = meta["tokenizer"]
    data = cfg.data.build_tokens(tokenizer)
    if len(data.train_ids) == 0 or float(data.train_mask[:, 1:].sum()) == 0:
        raise DataError(f"data {cfg.data.describe()} gives no training tokens; add text")
    student = cfg.student.build_lm(teacher, tokenizer, cfg.train.seed)  # the teacher's vocabulary
    cached = None
    if getattr(cfg.method, "signal", None) == "cache":
        directory = cfg.method.cache_dir or run_dir / "teacher-cache"
        build_topk_cache(directory, teacher, data.train_ids, cfg.method.top_k, progress=cfg.train.progress)
        cached = load_topk_cache(directory, cache_identity(teacher, data.train_ids, cfg.method.top_k))
    method = method_cls(cfg.method, student=student, teacher=teacher, data=data, seed=cfg.train.seed,
                        total_steps=cfg.train.steps, cached_targets=cached)
    return Built(data, teacher, meta, method)


def export_lm(run_dir: Path, student: nn.Module, tokenizer: Any, cfg: Any) -> None:
    """The student as a transformers folder (safetensors + tokenizer) plus distill.json."""
    with staged_directory(run_dir / "student") as staging:
        student.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        meta = {"format": FORMAT, "role": "student", "method": cfg.method.name, "run": cfg.name,
                "parameters": sum(p.numel() for p in student.parameters())}
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))


def tokens_per_second(model: nn.Module, ids: torch.Tensor, repeats: int) -> float:
    """Best-of-`repeats` forward throughput on the blocks `ids`, tokens per second."""
    with torch.no_grad():
        return ids.numel() / best_seconds(lambda: model(input_ids=ids), repeats)


def evaluate_lm_run(run_dir: Path, cfg: Any) -> list[dict[str, Any]]:
    """Evaluate an LM run's exported student beside its teacher: eval.json and report.html."""
    student, _ = load_causal_lm(run_dir / "student")
    teacher, meta = cfg.teacher.load()
    data = cfg.data.build_tokens(meta["tokenizer"])
    models = {"teacher": teacher, "student": student}
    scores = lm_scores(models, data.test_ids, data.test_mask)
    assisted = cfg.eval.assisted
    if assisted is not None:
        prompts = data.test_ids[: assisted.prompts, : assisted.prompt_tokens]
        scores["student"].update(assisted_draft_stats(teacher, student, prompts, gamma=assisted.gamma,
                                                      max_new_tokens=assisted.new_tokens))
    rows = []
    for name, model in models.items():
        row = {"model": name, "parameters": sum(p.numel() for p in model.parameters()), **scores[name]}
        if cfg.eval.timing_repeats:
            row["tokens_per_sec"] = tokens_per_second(model, data.test_ids[:8], cfg.eval.timing_repeats)
        rows.append(row)
    result = {"run": cfg.name, "method": cfg.method.name, "dataset": cfg.data.describe(),
              "family": LMTask.name, "primary_metric": "perplexity",
              "metrics": ["perplexity", "kl_to_teacher", "top1_agreement", "acceptance_rate",
                          *(["assisted_acceptance", "assisted_tokens_per_call"] if assisted else [])],
              "n_tokens": int(data.test_mask[:, 1:].sum()), "rows": rows}
    if assisted is not None:
        result["assisted"] = assisted.model_dump()
    metrics = run_dir / "metrics.jsonl"
    log = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    verdict = hacking_verdict(log)
    if verdict is not None:
        result["teacher_hacking"] = verdict
    write_text_atomic(run_dir / "eval.json", json.dumps(result, indent=2))
    write_report(run_dir)
    return rows


def generate_for(cfg: Any, prompts: Path, out: Path, *, max_new_tokens: int, temperature: float,
                 seed: int) -> int:
    """The teacher of an LM config completes every prompt of `prompts` into `out` (jsonl)."""
    from distill.lm.generate import generate_completions, read_prompts

    check_lm_config(cfg)
    teacher, meta = cfg.teacher.load()
    return generate_completions(teacher, meta["tokenizer"], read_prompts(prompts), out,
                                max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                progress=cfg.train.progress)


@TASKS.register("lm", summary="distillation of causal language models")
class LMTask(Task):
    name: ClassVar[str] = "lm"
    formats: ClassVar[tuple[str, ...]] = (FORMAT,)
    has_samples: ClassVar[bool] = False

    def check(self, cfg: Any) -> None:
        check_lm_config(cfg)

    def build(self, cfg: Any, run_dir: Path) -> Built:
        return build_lm(cfg, run_dir)

    def export(self, run_dir: Path, cfg: Any, built: Built, student: nn.Module) -> None:
        export_lm(run_dir, student, built.teacher_meta["tokenizer"], cfg)

    def load_export(self, directory: Path) -> tuple[nn.Module, dict[str, Any]]:
        model, tokenizer = load_causal_lm(directory)
        return model, {"format": FORMAT, "tokenizer": tokenizer, "source": str(directory)}

    def evaluate(self, run_dir: Path, cfg: Any) -> list[dict[str, Any]]:
        return evaluate_lm_run(run_dir, cfg)

    def table(self, eval_data: dict[str, Any]) -> list[list[str]]:
        return lm_table(eval_data)

    def report_sections(self, eval_data: dict[str, Any], run_dir: Path) -> tuple[str, str]:
        return lm_sections(eval_data)
