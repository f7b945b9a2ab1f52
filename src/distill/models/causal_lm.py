"""The small causal-LM student of LM distillation: a transformers Llama (the architecture of
SmolLM2 and most open LMs) built on the teacher's tokenizer, so its ids and output rows are the
teacher's.

    student: {name: llama, layers: 2, hidden: 128, heads: 4, kv_heads: 2, intermediate: 384}

`init: teacher-embeddings` copies the teacher's token embedding (needs hidden = the teacher's
hidden size); the output layer is tied to it, as in SmolLM2. `init: teacher-layers` makes the
student a truncated teacher: its embedding, its first `layers` decoder layers, its final norm
(and output layer when untied), so the widths must be the teacher's:

    student: {name: llama, init: teacher-layers, layers: 2, hidden: 576, heads: 9, kv_heads: 3,
              intermediate: 1536}                              # SmolLM2-135M's first 2 of 30 layers

A shallower member of the teacher's own family is the usual speculative-decoding draft
(DistillSpec distils e.g. a small T5 for a larger T5); cutting the teacher's depth is the
cheapest such draft. `init_from: runs/lm-ce-smollm2`
starts from a trained student of the same architecture (a run directory or a transformers
folder), e.g. a pretrained draft that DistillSpec then distils.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from distill.errors import ModelMismatchError
from distill.registry import MODELS


@MODELS.register("llama", summary="small transformers Llama causal LM on the teacher's tokenizer (LM distillation)")
class LlamaStudentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["llama"] = "llama"
    layers: int = Field(2, gt=0)
    hidden: int = Field(128, gt=0)
    heads: int = Field(4, gt=0)
    kv_heads: int | None = Field(None, gt=0, description="grouped-query attention heads (None: heads)")
    intermediate: int = Field(384, gt=0, description="MLP width")
    max_positions: int = Field(2048, gt=0)
    tie_embeddings: bool = True
    rope_theta: float = Field(10000.0, gt=0, description=(
        "rotary base of a random or teacher-embeddings student (teacher-layers takes the teacher's)"))
    init: Literal["random", "teacher-embeddings", "teacher-layers"] = Field("random", description=(
        "random; teacher-embeddings: the teacher's token embedding; teacher-layers: the teacher's "
        "embedding, first `layers` decoder layers, final norm and head (the teacher's widths)"))
    init_from: Path | None = Field(None, description=(
        "start from this trained student (run directory or transformers folder, same architecture)"))
    truncate_vocab: bool = Field(False, description=(
        "with init_from: accept a model whose output layer has padding rows beyond the teacher's "
        "vocabulary (same tokenizer), keeping the rows of the teacher's ids"))

    @model_validator(mode="after")
    def _check_heads(self) -> LlamaStudentConfig:
        if self.truncate_vocab and self.init_from is None:
            raise ValueError("truncate_vocab applies to a student started from init_from (a run "
                             "builds its own student on the teacher's vocabulary); set init_from or drop it")
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.heads % (self.kv_heads or self.heads):
            raise ValueError(f"heads {self.heads} is not divisible by kv_heads {self.kv_heads}")
        return self

    def build_lm(self, teacher: nn.Module, tokenizer: Any, seed: int) -> nn.Module:
        """A LlamaForCausalLM with the teacher's vocabulary and special-token ids (`tokenizer`
        is the teacher's: a student started from `init_from` must share it)."""
        from transformers import LlamaConfig, LlamaForCausalLM

        tc = teacher.config
        truncated = self.init == "teacher-layers" and self.init_from is None
        if truncated:
            check_truncation(self, tc)
        config = LlamaConfig(
            vocab_size=teacher.get_output_embeddings().weight.shape[0], hidden_size=self.hidden,
            intermediate_size=self.intermediate, num_hidden_layers=self.layers,
            num_attention_heads=self.heads, num_key_value_heads=self.kv_heads or self.heads,
            max_position_embeddings=self.max_positions, tie_word_embeddings=self.tie_embeddings,
            bos_token_id=tc.bos_token_id, eos_token_id=tc.eos_token_id,
            pad_token_id=getattr(tc, "pad_token_id", None), rms_norm_eps=getattr(tc, "rms_norm_eps", 1e-5),
            rope_theta=self.rope_theta)
        if truncated:  # the layers compute what they did in the teacher only with its settings
            for key in TRUNCATION_SETTINGS:
                if hasattr(tc, key):
                    setattr(config, key, getattr(tc, key))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config)
        if self.init_from is not None:
            load_same_architecture(model, self.init_from, teacher, tokenizer, self.truncate_vocab)
        elif self.init == "teacher-embeddings":
            source = teacher.get_input_embeddings().weight
            if source.shape[1] != self.hidden:
                raise ModelMismatchError(
                    f"student.init: teacher-embeddings copies the teacher's {source.shape[1]}-wide "
                    f"token embedding, but student.hidden is {self.hidden}; set student.hidden: "
                    f"{source.shape[1]} or student.init: random")
            with torch.no_grad():
                model.get_input_embeddings().weight.copy_(source)
        elif truncated:
            copy_teacher_layers(model, teacher)
        return model


# what a decoder layer's computation depends on besides its weights (transformers 5 keeps the
# rotary base in rope_parameters; older versions in rope_theta)
TRUNCATION_SETTINGS = ("head_dim", "hidden_act", "attention_bias", "mlp_bias", "rms_norm_eps",
                       "rope_parameters", "rope_theta")


def check_truncation(student: LlamaStudentConfig, tc: Any) -> None:
    """A ModelMismatchError naming each student setting that a truncated copy of the teacher
    (config `tc`) cannot have, with the value to set."""
    if getattr(tc, "model_type", "llama") != "llama":
        raise ModelMismatchError(
            f"student.init: teacher-layers copies Llama decoder layers, but the teacher is a "
            f"{tc.model_type!r} model; use student.init: teacher-embeddings or random")
    wanted = {"hidden": tc.hidden_size, "heads": tc.num_attention_heads,
              "kv_heads": getattr(tc, "num_key_value_heads", None) or tc.num_attention_heads,
              "intermediate": tc.intermediate_size,
              "tie_embeddings": bool(getattr(tc, "tie_word_embeddings", True))}
    have = {"hidden": student.hidden, "heads": student.heads,
            "kv_heads": student.kv_heads or student.heads, "intermediate": student.intermediate,
            "tie_embeddings": student.tie_embeddings}
    diffs = [f"student.{k}: {str(v).lower() if isinstance(v, bool) else v} (now {have[k]})"
             for k, v in wanted.items() if have[k] != v]
    if student.layers > tc.num_hidden_layers:
        diffs.append(f"student.layers: at most {tc.num_hidden_layers} (now {student.layers})")
    if diffs:
        raise ModelMismatchError(
            "student.init: teacher-layers makes the student the teacher's first layers, so it "
            "needs the teacher's widths; set " + ", ".join(diffs) + " (or student.init: random)")


def copy_teacher_layers(model: nn.Module, teacher: nn.Module) -> None:
    """Copy into `model` (a Llama with L decoder layers) the teacher's tensors of the same
    state-dict names: the token embedding, model.layers.0..L-1, the final norm, and lm_head
    when untied. A ModelMismatchError names every tensor missing from the teacher or of
    another shape."""
    source = teacher.state_dict()
    target = model.state_dict()
    missing = [k for k in target if k not in source]
    shapes = [f"{k} {tuple(source[k].shape)} there vs {tuple(v.shape)} here"
              for k, v in target.items() if k in source and source[k].shape != v.shape]
    if missing or shapes:
        raise ModelMismatchError("student.init: teacher-layers cannot copy the teacher: "
                                 + "; ".join([f"{k} missing" for k in missing[:5]] + shapes[:5]))
    with torch.no_grad():
        for key, value in target.items():
            value.copy_(source[key].to(value.dtype))


def load_same_architecture(model: nn.Module, source: Path, teacher: nn.Module, tokenizer: Any,
                           truncate_vocab: bool = False) -> None:
    """Copy the weights of the causal LM at `source` (a run directory's student/ or a
    transformers folder) into `model`; a ModelMismatchError when its tokenizer is not the
    teacher's, or naming the settings where its architecture differs. With `truncate_vocab`
    a padded vocabulary is accepted: the rows of the vocabulary-sized tensors (embedding,
    output layer) are copied up to the shorter of the two, and the rest keep their init."""
    from distill.lm.loading import check_same_vocabulary, load_causal_lm

    folder = source / "student" if (source / "student" / "config.json").is_file() else source
    trained, trained_tokenizer = load_causal_lm(folder)
    check_same_vocabulary(teacher, tokenizer, trained, trained_tokenizer, truncate_vocab=truncate_vocab,
                          option="student.truncate_vocab: true")
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "tie_word_embeddings")
    diffs = [f"{k}: {getattr(trained.config, k, None)} there vs {getattr(model.config, k, None)} here"
             for k in keys if getattr(trained.config, k, None) != getattr(model.config, k, None)
             and not (truncate_vocab and k == "vocab_size")]
    if diffs:
        raise ModelMismatchError(f"student.init_from: {folder} has another architecture ("
                                 + "; ".join(diffs) + "); match the student section to it")
    state = trained.state_dict()
    if truncate_vocab:
        own = model.state_dict()
        rows = {k: own[k].clone() for k, v in state.items()
                if v.ndim and k in own and v.shape[1:] == own[k].shape[1:] and v.shape[0] != own[k].shape[0]}
        for key, value in rows.items():
            n = min(len(value), len(state[key]))
            value[:n] = state[key][:n]
        state = {**state, **rows}
    model.load_state_dict(state)
