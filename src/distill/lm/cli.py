"""`distill lm ...`: the language-model family's own commands (teacher cache, teacher
generations)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distill.cli import console, fail
from distill.errors import DistillError

lm_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Language-model distillation tools.")


@lm_app.command("cache-teacher")
def cache_teacher(
    config: Annotated[Path, typer.Argument(help="an LM run config (its teacher, data and method.top_k)")],
    overrides: Annotated[list[str] | None, typer.Argument(help="dotted overrides: method.top_k=32")] = None,
    out: Annotated[Path | None, typer.Option(help="cache directory (default: the config's method.cache_dir)")] = None,
) -> None:
    """Write the teacher's top-k next-token log-probs of the config's training text to sharded
    safetensors files; re-running resumes after the last finished shard. Train from it with
    method.signal=cache method.cache_dir=<out>."""
    from distill.config import load_config
    from distill.lm.task import cache_teacher as cache_teacher_

    try:
        cfg = load_config(config, overrides or [])
        directory, manifest = cache_teacher_(cfg, out)
    except DistillError as err:
        fail(err)
        return
    identity = manifest["identity"]
    console.print(f"teacher cache: {directory} ({identity['rows']} blocks of {identity['block_size']} "
                  f"tokens, top-{identity['k']}, {len(manifest['shards'])} shards)")


@lm_app.command("generate")
def generate(
    config: Annotated[Path, typer.Argument(help="an LM run config (its teacher)")],
    prompts: Annotated[Path, typer.Option(help="prompts: .txt (one per line) or .jsonl ({'prompt': ...})")],
    out: Annotated[Path, typer.Option(help="the jsonl of {prompt, completion} to write (resumes)")],
    max_new_tokens: Annotated[int, typer.Option(help="tokens per completion")] = 64,
    temperature: Annotated[float, typer.Option(help="sampling temperature; 0: greedy")] = 0.7,
    seed: Annotated[int, typer.Option(help="sampling seed (prompt i uses seed + i)")] = 0,
) -> None:
    """The config's teacher completes every prompt; train on the result with method seq-kd and
    data.path=<out>. Re-running resumes after the last finished line."""
    from distill.config import load_config
    from distill.lm.task import generate_for

    try:
        n = generate_for(load_config(config), prompts, out, max_new_tokens=max_new_tokens,
                         temperature=temperature, seed=seed)
    except DistillError as err:
        fail(err)
        return
    console.print(f"teacher generations: {out} ({n} prompts)")


