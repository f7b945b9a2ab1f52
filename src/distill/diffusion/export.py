"""Save and load a trained denoiser: `model.safetensors` + `config.json` in one directory.

This is the `student/` directory of every run, and what a later run loads when it names
the run as its teacher.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from distill.diffusion.denoiser import Denoiser
from distill.errors import CheckpointError
from distill.registry import MODELS

FORMAT = "distill.denoiser/v1"


def save_denoiser(directory: Path, denoiser: Denoiser, model_cfg: Any, dim: int,
                  **meta: Any) -> Path:
    """Write weights and config atomically (temp files, then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in denoiser.net.state_dict().items()}
    save_file(weights, directory / "model.safetensors.tmp")
    os.replace(directory / "model.safetensors.tmp", directory / "model.safetensors")
    config = {"format": FORMAT, "model": model_cfg.model_dump(mode="json"), "dim": dim,
              "schedule": denoiser.schedule.name, "prediction": denoiser.prediction, **meta}
    (directory / "config.json.tmp").write_text(json.dumps(config, indent=2))
    os.replace(directory / "config.json.tmp", directory / "config.json")
    return directory


def read_export_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} holds no exported model (missing config.json); "
                              "point at a finished run directory or its student/ folder")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a distill denoiser export (format {config.get('format')!r})")
    return config


def load_denoiser(directory: Path) -> tuple[Denoiser, dict[str, Any]]:
    """The exported denoiser (eval mode, frozen) and its config.json contents."""
    directory = Path(directory)
    config = read_export_config(directory)
    model_cfg = MODELS.get(config["model"]["name"]).model_validate(config["model"])
    net = model_cfg.build(config["dim"])
    try:
        state = load_file(directory / "model.safetensors")
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{directory / 'model.safetensors'} cannot be read ({err}); "
                              "the export is corrupt: re-run `distill eval` on its run or retrain") from None
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{directory / 'model.safetensors'} does not fit its config.json: {err}") from None
    denoiser = Denoiser(net, config["schedule"], config["prediction"])
    return freeze(denoiser), config


def freeze(module: nn.Module) -> Any:
    return module.eval().requires_grad_(False)
