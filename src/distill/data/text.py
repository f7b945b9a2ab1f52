"""Text for LM distillation, tokenized with the teacher's tokenizer into fixed-length blocks.

    data: {name: text, path: corpus.txt, block_size: 128}        # documents split on blank lines
    data: {name: text, path: chats.jsonl}                        # {"text": ...} or {"prompt", "completion"}
    data: {name: text, builtin: python-docs}                     # offline English corpus (tests, demo)

Documents are split into train and held-out by a seeded shuffle of whole documents (no block
of a held-out document is ever trained on). A `{"prompt", "completion"}` line trains only on
the completion tokens: the prompt's positions get mask 0. Blocks are filled by concatenating
documents separated by the tokenizer's EOS token.

`python-docs` is the docstrings of 45 modules of Python's standard library (about 50k
tokens with SmolLM2's tokenizer): real English prose on every machine, with no download.
"""

from __future__ import annotations

import inspect
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from distill.data.base import DatasetConfig, file_error
from distill.errors import ConfigError, DataError
from distill.registry import DATASETS

PYTHON_DOC_MODULES = (
    "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib",
    "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fractions",
    "functools", "gzip", "heapq", "http.client", "inspect", "io", "ipaddress", "itertools",
    "json", "logging", "pathlib", "pickle", "pprint", "queue", "random", "re", "shutil",
    "sqlite3", "statistics", "string", "subprocess", "tarfile", "textwrap", "threading",
    "typing", "unittest", "urllib.parse", "uuid", "zipfile",
)


@dataclass
class Document:
    """One document: text, or a prompt whose completion is the only part trained on."""

    text: str
    prompt: str = ""


def python_docs() -> list[Document]:
    """The docstrings of PYTHON_DOC_MODULES and their public classes and functions, one
    document each, in a fixed order."""
    import importlib
    import warnings

    docs, seen = [], set()
    for module_name in PYTHON_DOC_MODULES:
        module = importlib.import_module(module_name)
        for name, obj in [(module_name, module)] + sorted(vars(module).items()):
            if name.startswith("_") or not (obj is module or inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if obj is not module and getattr(obj, "__module__", None) != module.__name__:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # typing.io, typing.re
                doc = inspect.getdoc(obj)
            if doc and len(doc) >= 200 and doc not in seen:
                seen.add(doc)
                docs.append(Document(doc))
    return docs


def read_documents(path: Path) -> list[Document]:
    """Documents of a .txt (split on blank lines) or .jsonl ({"text"} or {"prompt", "completion"}
    per line) file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "file not found", "Check data.path.")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise file_error(path, f"is not UTF-8 text ({err.reason} at byte {err.start})",
                         "Give a .txt or .jsonl file in UTF-8.") from None
    if path.suffix == ".jsonl":
        docs = []
        for number, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise file_error(path, f"line {number} is not JSON ({err.msg})",
                                 'Write one object per line: {"text": ...}.') from None
            if isinstance(row, dict) and isinstance(row.get("text"), str):
                docs.append(Document(row["text"]))
            elif isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
                docs.append(Document(row["completion"], prompt=row["prompt"]))
            else:
                raise file_error(path, f"line {number} has neither a string 'text' nor string "
                                 "'prompt' and 'completion'", 'Write {"text": ...} or '
                                 '{"prompt": ..., "completion": ...} per line.')
    else:
        docs = [Document(part.strip()) for part in content.split("\n\n") if part.strip()]
    if not docs:
        raise file_error(path, "holds no text", "Give a file with at least one document.")
    return docs


@dataclass
class TokenData:
    """Token blocks for causal-LM training and evaluation.

    train_ids, test_ids: (N, L) / (M, L) int64 token ids.
    train_mask, test_mask: (N, L) / (M, L) float 0/1: 1 where the token is a prediction target
        (position i is predicted from the ids before it; padding and prompts are 0).
    """

    name: str
    train_ids: torch.Tensor
    train_mask: torch.Tensor
    test_ids: torch.Tensor
    test_mask: torch.Tensor

    def training_rows(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.train_ids, "target_mask": self.train_mask,
                "row": torch.arange(len(self.train_ids))}


def pack_blocks(docs: list[Document], tokenizer: Any, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of shape (N, block_size): documents joined with EOS and cut into blocks
    (a last partial block is padded with EOS and mask 0)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token to separate documents")
    ids: list[int] = []
    mask: list[float] = []
    for doc in docs:
        prompt = tokenizer(doc.prompt, add_special_tokens=False)["input_ids"] if doc.prompt else []
        text = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        ids += prompt + text + [eos]
        mask += [0.0] * len(prompt) + [1.0] * (len(text) + 1)
    n = -(-len(ids) // block_size)
    pad = n * block_size - len(ids)
    ids_t = torch.tensor(ids + [eos] * pad, dtype=torch.long).view(n, block_size)
    mask_t = torch.tensor(mask + [0.0] * pad).view(n, block_size)
    mask_t[:, 0] = 0.0  # the first token of a block has nothing before it to be predicted from
    return ids_t, mask_t


@DATASETS.register("text", summary="text/jsonl files (or the built-in python-docs corpus) in token blocks")
class TextDataConfig(DatasetConfig):
    name: Literal["text"] = "text"
    path: Path | None = Field(None, description=".txt (documents split on blank lines) or .jsonl")
    builtin: Literal["python-docs"] | None = Field(None, description="a corpus that ships with Python")
    block_size: int = Field(128, ge=8, description="tokens per training block")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="documents held out for evaluation")
    max_train_blocks: int | None = Field(None, gt=0, description="keep at most this many training blocks")
    max_test_blocks: int | None = Field(None, gt=0, description="keep at most this many held-out blocks")
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> TextDataConfig:
        if (self.path is None) == (self.builtin is None):
            raise ValueError("text data needs exactly one of path (a .txt/.jsonl file) or builtin")
        return self

    def build(self) -> Any:
        raise ConfigError("text data is tokenized with the teacher's tokenizer; use it with an LM "
                          "method (lm-kd, lm-ce), not a diffusion or classifier method")

    def documents(self) -> list[Document]:
        return python_docs() if self.builtin == "python-docs" else read_documents(self.path)

    def build_tokens(self, tokenizer: Any) -> TokenData:
        """Documents -> seeded train/held-out split -> blocks of block_size tokens."""
        docs = self.documents()
        order = list(range(len(docs)))
        random.Random(self.seed).shuffle(order)
        n_test = max(1, round(self.test_fraction * len(docs)))
        if n_test >= len(docs):
            raise DataError(f"data {self.describe()}: {len(docs)} document(s) cannot be split into "
                            f"train and held-out at test_fraction {self.test_fraction}; add text")
        test_ids, test_mask = pack_blocks([docs[i] for i in order[:n_test]], tokenizer, self.block_size)
        train_ids, train_mask = pack_blocks([docs[i] for i in order[n_test:]], tokenizer, self.block_size)
        return TokenData(self.describe(), train_ids[: self.max_train_blocks],
                         train_mask[: self.max_train_blocks], test_ids[: self.max_test_blocks],
                         test_mask[: self.max_test_blocks])

    def describe(self) -> str:
        return self.builtin or str(self.path)
