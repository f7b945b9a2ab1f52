"""Save and load a trained classifier: `model.safetensors` + `distill.json` in one directory
(the `student/` folder of a KD run, and what a later run loads as its teacher).

    student/
      distill.json         format, model config, input shape, classes, role, method
      model.safetensors    the weights
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from distill.errors import CheckpointError
from distill.export_dir import META_FILE, load_weights_into, read_meta_json, staged_directory
from distill.models.classifiers import parameter_count
from distill.registry import MODELS

FORMAT = "distill.classifier/v1"
WEIGHTS = "model.safetensors"


def save_classifier(directory: Path, model: nn.Module, model_cfg: Any, shape: tuple[int, ...],
                    num_classes: int, **meta: Any) -> Path:
    """Write the classifier atomically (a crash never leaves a half-written export)."""
    with staged_directory(directory) as staging:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, staging / WEIGHTS)
        (staging / META_FILE).write_text(json.dumps({
            "format": FORMAT, "model": model_cfg.model_dump(mode="json"), "shape": list(shape),
            "num_classes": num_classes, "parameters": parameter_count(model), "weights": WEIGHTS,
            **meta}, indent=2))
    return Path(directory)


def load_classifier(directory: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The exported classifier (eval mode, frozen) and its metadata."""
    directory = Path(directory)
    path = directory / META_FILE
    meta = read_meta_json(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a distill classifier export (format "
                              f"{meta.get('format')!r}); a KD teacher must be a classifier")
    model_cfg = MODELS.get(meta["model"]["name"]).model_validate(meta["model"])
    model = model_cfg.make_classifier(tuple(meta["shape"]), meta["num_classes"])
    load_weights_into(model, directory / meta["weights"], META_FILE, "retrain the run that made it")
    model.eval().requires_grad_(False)
    return model, meta
