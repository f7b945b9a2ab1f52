"""The `distill` command line: run, eval, report, list, demo, lm cache-teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from distill.errors import DistillError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distil a slow or large teacher into a fast or small student.")
console = Console(stderr=False)
err_console = Console(stderr=True)

def _fail(err: DistillError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


COMPACT_COLUMNS = {"model": "model", "NFE": "NFE", "SWD": "SWD", "MMD": "MMD",
                   "mode coverage": "modes", "FID": "FID", "class accuracy": "class acc.",
                   "ms / sample": "ms/sample", "teacher NFE at equal SWD": "≡ teacher NFE",
                   "teacher NFE at equal FID": "≡ teacher NFE", "speed-up": "speed-up",
                   "parameters": "params", "accuracy": "accuracy", "agreement": "agreement",
                   "ECE": "ECE", "KL to teacher": "KL to teacher", "perplexity": "perplexity",
                   "top-1 agreement": "top-1 agr.", "draft acceptance": "accept.",
                   "assisted acceptance (greedy)": "assisted accept.",
                   "tokens / s": "tokens/s"}


def print_eval_table(eval_data: dict, title: str) -> None:
    """The eval table, narrowed to the columns that fit a terminal."""
    from distill.report import format_table

    rows = format_table(eval_data)
    keep = [i for i, header in enumerate(rows[0]) if header in COMPACT_COLUMNS]
    table = Table(title=title)
    for i in keep:
        table.add_column(COMPACT_COLUMNS[rows[0][i]], justify="left" if i == 0 else "right")
    for row in rows[1:]:
        table.add_row(*(row[i] for i in keep), style=None if row[0] == "teacher" else "bold green")
    console.print(table)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="run config YAML")],
    overrides: Annotated[list[str] | None, typer.Argument(help="dotted overrides: train.steps=200 eval.nfe=[1,2,4]")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="run directory (default runs/<name>)")] = None,
    force: Annotated[bool, typer.Option(help="resume a run dir even if its config differs")] = False,
    evaluate: Annotated[bool, typer.Option(help="evaluate and report after training (--no-evaluate: train "
                                                "and export only; `distill eval RUN_DIR` later)")] = True,
) -> None:
    """Train, evaluate and report one run; re-running the same command resumes it."""
    import json

    from distill.config import load_config
    from distill.runner import run as run_

    try:
        cfg = load_config(config, overrides or [])
        result = run_(cfg, run_dir, force=force, evaluate=evaluate)
    except DistillError as err:
        _fail(err)
        return
    if result.rows:
        print_eval_table(json.loads((result.run_dir / "eval.json").read_text()), cfg.name)
        console.print(f"report: {result.report}")


@app.command("eval")
def eval_(run_dir: Annotated[Path, typer.Argument(help="a finished run directory")]) -> None:
    """Re-evaluate a run's exported student beside its teacher (eval.json, report.html)."""
    import json

    from distill.runner import evaluate_run

    try:
        evaluate_run(run_dir)
    except DistillError as err:
        _fail(err)
    print_eval_table(json.loads((run_dir / "eval.json").read_text()), run_dir.name)
    console.print(f"report: {run_dir / 'report.html'}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory")]) -> None:
    """Rewrite report.html from the run's metrics, eval.json and samples."""
    from distill.report import write_report

    try:
        path = write_report(run_dir)
    except DistillError as err:
        _fail(err)
        return
    console.print(f"report: {path}")


@app.command("list")
def list_() -> None:
    """Registered methods, datasets, models and teacher sources, with the paper each implements."""
    import distill.components  # noqa: F401
    from distill.registry import DATASETS, METHODS, MODELS, TEACHERS

    for registry in (METHODS, DATASETS, MODELS, TEACHERS):
        table = Table(title=f"{registry.kind}s", title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("what it does")
        table.add_column("paper")
        for entry in registry:
            table.add_row(entry.name, entry.summary, entry.paper or "—")
        console.print(table)


lm_app = typer.Typer(no_args_is_help=True, help="Language-model distillation tools.")
app.add_typer(lm_app, name="lm")


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
    from distill.lm.runner import cache_teacher as cache_teacher_

    try:
        cfg = load_config(config, overrides or [])
        directory, manifest = cache_teacher_(cfg, out)
    except DistillError as err:
        _fail(err)
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
    from distill.lm.runner import generate_for

    try:
        n = generate_for(load_config(config), prompts, out, max_new_tokens=max_new_tokens,
                         temperature=temperature, seed=seed)
    except DistillError as err:
        _fail(err)
        return
    console.print(f"teacher generations: {out} ({n} prompts)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where the demo runs go")] = Path("runs/demo"),
    dataset: Annotated[str, typer.Option(help="toy dataset")] = "8gaussians",
) -> None:
    """Train (or load from cache) a toy flow teacher, distil it with ode-pairs and progressive,
    and print the comparison table."""
    from distill.demo import run_demo

    try:
        run_demo(out, dataset, console)
    except DistillError as err:
        _fail(err)


if __name__ == "__main__":  # pragma: no cover
    app()
