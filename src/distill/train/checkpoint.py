"""Atomic, verifiable checkpoints.

A checkpoint is a directory `checkpoints/step-NNNNNNNN/`:

    model.safetensors      the method's trainable state (frozen teacher left out)
    ema.safetensors        the student's EMA, when enabled
    optimizers.pt          optimizer state dicts (torch.save; loaded with weights_only=True)
    trainer_state.json     step, data position, schedulers, method extra state, config hash
    rng-rank{R}.json       each process's torch / numpy / python RNG states
    MANIFEST.json          size and sha256 of every file above, written last

It is written into `checkpoints/.tmp-step-NNNNNNNN/` and renamed into place only when
complete, so a kill or a full disk mid-write never leaves a half checkpoint under a real
name. On load, a checkpoint whose manifest is missing or whose files do not match it is
reported, moved to `checkpoints/corrupt/`, and the previous good one is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from distill.errors import CheckpointError

STEP_DIR = re.compile(r"^step-(\d{8})$")
MANIFEST = "MANIFEST.json"


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def staging_dir(root: Path, step: int) -> Path:
    """The temporary directory a checkpoint for `step` is assembled in (emptied first)."""
    tmp = root / f".tmp-{step_dir_name(step)}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    """This process's RNG states as JSON-able data."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def write_rng(tmp: Path, rank: int) -> None:
    """Each process writes its own RNG file into the staging directory."""
    _write_json(tmp / f"rng-rank{rank}.json", rng_state())


def save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    """A state dict as safetensors; tensors that share memory (tied weights, e.g. an LM's
    embedding and output layer) are stored once and their other names kept as aliases."""
    unique: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    for key, value in tensors.items():
        ident = (value.untyped_storage().data_ptr() + value.storage_offset() * value.element_size(),
                 tuple(value.shape))
        if ident in seen and value.numel():
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        unique[key] = value.detach().contiguous().cpu()
    save_file(unique, path, metadata={"aliases": json.dumps(aliases)})


def load_tensors(path: Path) -> dict[str, Tensor]:
    """What `save_tensors` wrote, aliases restored (they share the tensor they name)."""
    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    for key, source in aliases.items():
        tensors[key] = tensors[source]
    return tensors


def finalize(root: Path, step: int, *, model: dict[str, Tensor], ema: dict[str, Tensor] | None,
             optimizers: dict[str, Any], state: dict[str, Any], keep: int) -> Path:
    """Write the remaining files, the manifest, then rename the staging dir into place.

    Called on the main process after every process has written its RNG file.
    Raises CheckpointError (staging dir removed, earlier checkpoints untouched) on OSError.
    """
    tmp = root / f".tmp-{step_dir_name(step)}"
    final = root / step_dir_name(step)
    try:
        save_tensors(model, tmp / "model.safetensors")
        if ema is not None:
            save_tensors(ema, tmp / "ema.safetensors")
        torch.save(optimizers, tmp / "optimizers.pt")
        _write_json(tmp / "trainer_state.json", state)
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:
            _fsync(tmp / name)
        manifest = {name: {"size": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                    for name in files}
        _write_json(tmp / MANIFEST, {"step": step, "files": manifest})
        if final.exists():  # an older write of the same step (e.g. after resuming earlier)
            _quarantine(root, final)
        os.replace(tmp, final)
        _fsync(root)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        good = latest_valid(root)[0]
        kept = f"the last good checkpoint {good} is intact" if good else "no earlier checkpoint exists"
        raise CheckpointError(
            f"could not write the checkpoint for step {step} in {root}: {err}. Nothing was "
            f"renamed into place; {kept}. Free disk space and rerun the same command to resume."
        ) from err
    prune(root, keep)
    return final


def verify(path: Path) -> str | None:
    """None when the checkpoint at `path` is complete and intact, else what is wrong."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no MANIFEST.json (the write never finished)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return "MANIFEST.json is unreadable"
    for name, meta in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != meta["size"]:
            return f"{name} has {file.stat().st_size} bytes, expected {meta['size']} (truncated?)"
        if _sha256(file) != meta["sha256"]:
            return f"{name} does not match its checksum (corrupted)"
    return None


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint directory under root, newest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return sorted(found, reverse=True)


def latest_valid(root: Path) -> tuple[Path | None, list[str]]:
    """The newest intact checkpoint, and a message for each newer one that is broken."""
    problems = []
    for _, path in list_checkpoints(root):
        problem = verify(path)
        if problem is None:
            return path, problems
        problems.append(f"skipping checkpoint {path}: {problem}")
    return None, problems


def _quarantine(root: Path, path: Path) -> Path:
    target_dir = root / "corrupt"
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    n = 1
    while target.exists():
        target, n = target_dir / f"{path.name}.{n}", n + 1
    os.replace(path, target)
    return target


def quarantine_broken(root: Path) -> list[str]:
    """Move checkpoints newer than the latest good one to checkpoints/corrupt/; report them."""
    good, problems = latest_valid(root)
    good_step = int(STEP_DIR.match(good.name).group(1)) if good else -1
    moved = []
    for step, path in list_checkpoints(root):
        if step > good_step:
            moved.append(f"{path.name} -> {_quarantine(root, path)}")
    return [f"{p} (moved: {m})" for p, m in zip(problems, moved, strict=False)]


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints, and stale staging directories."""
    for _, path in list_checkpoints(root)[keep:]:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class LoadedCheckpoint:
    path: Path
    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None
    optimizers: dict[str, Any]
    state: dict[str, Any]
    rng: dict[str, Any] | None


def load(path: Path, rank: int = 0) -> LoadedCheckpoint:
    """Read a verified checkpoint (call `verify` or `latest_valid` first)."""
    try:
        model = load_tensors(path / "model.safetensors")
        ema = load_tensors(path / "ema.safetensors") if (path / "ema.safetensors").exists() else None
        optimizers = torch.load(path / "optimizers.pt", weights_only=True)
        state = json.loads((path / "trainer_state.json").read_text())
        rng_file = path / f"rng-rank{rank}.json"
        rng = json.loads(rng_file.read_text()) if rng_file.exists() else None
    except (OSError, SafetensorError, RuntimeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {path} cannot be read: {err}") from err
    return LoadedCheckpoint(path, int(state["step"]), model, ema, optimizers, state, rng)
