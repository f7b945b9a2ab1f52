"""The `distill` command line: run, eval, report, list, demo, and each family's own commands
(`distill lm ...`), loaded when first named (`distill.registry.FAMILY_COMMANDS`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from distill.errors import DistillError


class FamilyCommands(TyperGroup):
    """The root command group: the shared commands, plus each family's command group, imported
    only when it is named or listed (so `distill run` loads no family's command code)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from distill.registry import family_commands

        return [*super().list_commands(ctx), *sorted(family_commands())]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from distill.registry import family_commands

        found = super().get_command(ctx, name)
        if found is None and name in family_commands():
            found = typer.main.get_command(family_commands()[name]())
            found.name = name
        return found


app = typer.Typer(cls=FamilyCommands, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Distil a slow or large teacher into a fast or small student.")
console = Console(stderr=False)
err_console = Console(stderr=True)

def fail(err: DistillError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


COMPACT_COLUMNS = {"model": "model", "NFE": "NFE", "MMD²": "MMD²", "SWD": "SWD", "MMD": "MMD",
                   "mode coverage": "modes", "FID": "FID", "class accuracy": "class acc.",
                   "ms / sample": "ms/sample", "teacher NFE at equal SWD": "≡ teacher NFE",
                   "teacher NFE at equal FID": "≡ teacher NFE", "teacher NFE at equal MMD²": "≡ teacher NFE",
                   "speed-up": "speed-up",
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
        table.add_row(*(row[i].split("±")[0] for i in keep), style=None if row[0] == "teacher" else "bold green")
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
        fail(err)
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
        fail(err)
    print_eval_table(json.loads((run_dir / "eval.json").read_text()), run_dir.name)
    console.print(f"report: {run_dir / 'report.html'}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory")]) -> None:
    """Rewrite report.html from the run's metrics, eval.json and samples."""
    from distill.report import write_report

    try:
        path = write_report(run_dir)
    except DistillError as err:
        fail(err)
        return
    console.print(f"report: {path}")


@app.command("list")
def list_() -> None:
    """Registered tasks (families), methods, datasets, models and teacher sources, with the paper each implements."""
    from distill.registry import DATASETS, METHODS, MODELS, TASKS, TEACHERS

    for registry in (TASKS, METHODS, DATASETS, MODELS, TEACHERS):
        table = Table(title=f"{registry.kind}s", title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("what it does")
        table.add_column("paper")
        for entry in registry:
            table.add_row(entry.name, entry.summary, entry.paper or "—")
        console.print(table)


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
        fail(err)


if __name__ == "__main__":  # pragma: no cover
    app()
