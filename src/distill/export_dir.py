"""Run outputs written so that a crash never leaves them half-written: every exported model
(denoiser, classifier, LM) goes into a temporary sibling directory swapped into place, and
single files (config.yaml, eval.json) are replaced atomically; exports are read back with
errors that name the file."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from distill.errors import CheckpointError

META_FILE = "distill.json"  # every export's metadata: its "format" names the task that reads it


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary sibling and an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def staged_directory(directory: Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces `directory` (the old one is
    removed only after the new one is in place); on an error `directory` stays untouched."""
    directory = Path(directory)
    staging = directory.with_name(directory.name + ".tmp-export")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = directory.with_name(directory.name + ".old-export")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(staging, directory)
    shutil.rmtree(old, ignore_errors=True)


def read_meta_json(path: Path) -> dict[str, Any]:
    """The metadata JSON of an export folder, or a CheckpointError naming its folder or file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path.parent} holds no exported model (missing {path.name}); "
                              "point at a finished run directory or its student/ folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None


def load_weights_into(module: nn.Module, weights: Path, meta_name: str, fix: str) -> None:
    """Load the safetensors file `weights` into `module`; a CheckpointError (with `fix`) when
    the file is unreadable, or when it does not fit the architecture its `meta_name` describes."""
    try:
        state = load_file(weights)
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{weights} cannot be read ({err}); the export is corrupt: {fix}") from None
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{weights} does not fit its {meta_name}: {err}") from None
