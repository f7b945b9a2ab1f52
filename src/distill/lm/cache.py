"""The offline teacher cache: the teacher's top-k next-token log-probs for every training block,
written once to sharded safetensors files with a manifest, and read by training instead of a
live teacher.

    <dir>/manifest.json          format, identity (teacher fingerprint, data, k, block size),
                                 rows, shard_rows, and the shards finished so far
    <dir>/shard-00000.safetensors  indices (S, L-1, k) int32, logprobs (S, L-1, k) float32

Each shard is written to a temporary file and renamed, then the manifest (also replaced
atomically) lists it; a shard the manifest does not list is never read, so a killed run leaves
only finished shards behind and `build_topk_cache` resumes after them. A directory made for a
different teacher, data or block size is refused, never mixed; one built with a larger k
serves any smaller k (its first k entries, ids being stored by rank).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from distill.errors import CheckpointError
from distill.lm.targets import DenseTargets, SparseTargets, predicting_hidden_states

FORMAT = "distill.teacher-topk/v1"
MANIFEST = "manifest.json"


def teacher_fingerprint(model: nn.Module) -> str:
    """A digest of a model's parameter names, shapes and a sample of every tensor's values."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(flat[:: max(1, flat.numel() // 64)][:64].float().numpy().tobytes())
    return digest.hexdigest()[:16]


def tokens_digest(ids: Tensor) -> str:
    return hashlib.sha256(ids.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def cache_identity(teacher: nn.Module, ids: Tensor, k: int) -> dict[str, Any]:
    """What a cache must have been built from to be usable for these blocks."""
    return {"teacher": teacher_fingerprint(teacher), "tokens": tokens_digest(ids),
            "k": k, "rows": ids.shape[0], "block_size": ids.shape[1]}


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); delete {directory} to rebuild "
                              "the teacher cache") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a distill teacher cache (format "
                              f"{manifest.get('format')!r}); choose another directory")
    return manifest


def check_identity(directory: Path, manifest: dict[str, Any], identity: dict[str, Any]) -> None:
    """The cache was built from the same teacher and tokens, with at least the k asked for
    (the top-k of a larger cache are its first k entries: ids are stored by rank)."""
    found = manifest.get("identity", {})
    diffs = [f"{key}: cache {found.get(key)!r} vs this run {value!r}"
             for key, value in identity.items()
             if found.get(key) != value and not (key == "k" and (found.get("k") or 0) > value)]
    if diffs:
        raise CheckpointError(
            f"the teacher cache {directory} was built for another teacher or data ("
            + "; ".join(diffs) + "); it is never mixed with this run's: point method.cache_dir "
            "elsewhere or delete it")


def write_json_atomic(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


@torch.no_grad()
def teacher_topk(teacher: nn.Module, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k next-token ids and log-probs (B, L-1, k) of the teacher on blocks `ids` (B, L)."""
    hidden = predicting_hidden_states(teacher, ids)
    dense = DenseTargets(hidden.reshape(-1, hidden.shape[-1]), teacher.get_output_embeddings().weight)
    top = dense.topk(k)
    return (top.indices.view(*hidden.shape[:2], k).to(torch.int32),
            top.logprobs.view(*hidden.shape[:2], k))


def build_topk_cache(directory: Path, teacher: nn.Module, ids: Tensor, k: int, *,
                     shard_rows: int = 64, batch_rows: int = 8, progress: bool = True) -> dict[str, Any]:
    """Write (or finish) the top-k cache of `teacher` on blocks `ids` (N, L) into `directory`;
    returns the manifest. Finished shards of an interrupted build are kept and skipped."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    identity = cache_identity(teacher, ids, k)
    manifest = read_manifest(directory)
    if manifest is not None:
        identity["k"] = max(k, manifest.get("identity", {}).get("k") or 0)  # a larger k serves k
    if manifest is None:
        manifest = {"format": FORMAT, "identity": identity, "shard_rows": shard_rows, "shards": {}}
    check_identity(directory, manifest, identity)
    shard_rows = manifest["shard_rows"]
    starts = range(0, ids.shape[0], shard_rows)
    todo = [s for s in starts if str(s // shard_rows) not in manifest["shards"]]
    bar = tqdm(total=ids.shape[0], initial=ids.shape[0] - sum(min(shard_rows, ids.shape[0] - s) for s in todo),
               desc="teacher top-k cache", unit="block", disable=not progress)
    for start in todo:
        shard = start // shard_rows
        rows = ids[start:start + shard_rows]
        parts = [teacher_topk(teacher, rows[i:i + batch_rows], k) for i in range(0, len(rows), batch_rows)]
        name = f"shard-{shard:05d}.safetensors"
        tmp = directory / (name + ".tmp")
        save_file({"indices": torch.cat([p[0] for p in parts]).contiguous(),
                   "logprobs": torch.cat([p[1] for p in parts]).contiguous()}, str(tmp))
        os.replace(tmp, directory / name)
        manifest["shards"][str(shard)] = {"file": name, "rows": len(rows)}
        write_json_atomic(directory / MANIFEST, manifest)
        bar.update(len(rows))
    bar.close()
    return manifest


def load_topk_cache(directory: Path, identity: dict[str, Any]) -> SparseTargets:
    """Every row's cached targets: indices (N, L-1, k) int32, logprobs (N, L-1, k); a
    CheckpointError when the cache is incomplete, from another teacher/data, or corrupt."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise CheckpointError(f"{directory} holds no teacher cache (no {MANIFEST})")
    check_identity(directory, manifest, identity)
    n_shards = -(-identity["rows"] // manifest["shard_rows"])
    missing = [s for s in range(n_shards) if str(s) not in manifest["shards"]]
    if missing:
        raise CheckpointError(f"the teacher cache {directory} is incomplete ({len(missing)} of "
                              f"{n_shards} shards missing); run the build again to finish it")
    indices, logprobs = [], []
    for s in range(n_shards):
        entry = manifest["shards"][str(s)]
        path = directory / entry["file"]
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError) as err:
            raise CheckpointError(f"{path} cannot be read ({err}); delete it and its entry in "
                                  f"{MANIFEST} (or the whole cache) and rebuild") from None
        if tensors["indices"].shape[0] != entry["rows"]:
            raise CheckpointError(f"{path} holds {tensors['indices'].shape[0]} rows, the manifest "
                                  f"says {entry['rows']}; rebuild the cache")
        indices.append(tensors["indices"])
        logprobs.append(tensors["logprobs"])
    k = identity["k"]
    return SparseTargets(torch.cat(indices)[..., :k], torch.cat(logprobs)[..., :k])
