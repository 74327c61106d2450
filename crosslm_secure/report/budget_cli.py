"""``crosslm budget``: show and plot each client's privacy spend in a run.

The main CLI mounts ``budget_app`` as ``crosslm budget``; the commands only call the
library functions in :mod:`crosslm_secure.report.budgets` and :mod:`crosslm_secure.report.budget`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from crosslm_secure.clitools import RunAlias, RunArgument, fail, pick_run
from crosslm_secure.errors import CrossLMError
from crosslm_secure.report.budget import budget_table, plot_epsilon
from crosslm_secure.report.budgets import budgets_json, run_budgets
from crosslm_secure.runstore import RunStore

budget_app = typer.Typer(
    help="Privacy budget per client: epsilon spent, left, rounds (from the run's ledgers).",
    no_args_is_help=True,
)


@budget_app.command("show")
def show(
    run_dir: RunArgument = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    run_alias: RunAlias = None,
) -> None:
    """A table per client: epsilon spent, left, budget, rounds, accountant, delta."""
    run = pick_run("budget show", run_dir, run_alias, code=1)
    try:
        budgets = run_budgets(run)
    except CrossLMError as exc:
        fail(exc, code=1)
    if as_json:
        typer.echo(json.dumps({"run": str(run), "clients": budgets_json(budgets)}, indent=2))
        return
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=160)
    console.print(budget_table(budgets, title=f"Privacy budget of {run.name}"))


@budget_app.command("plot")
def plot(
    run_dir: RunArgument = None,
    out: Annotated[Path | None, typer.Option("--out", help="PNG to write (default: <run>/plots/epsilon.png).")] = None,
    run_alias: RunAlias = None,
) -> None:
    """Draw cumulative epsilon per round for each client (PNG)."""
    run = pick_run("budget plot", run_dir, run_alias, code=1)
    try:
        budgets = run_budgets(run)
    except CrossLMError as exc:
        fail(exc, code=1)
    path = plot_epsilon(budgets, out or run / "plots" / "epsilon.png", title=f"Privacy spent in {run.name}")
    if path.resolve().is_relative_to(run.resolve()):  # a new server-side file: the manifest must list it
        RunStore(run).seal_manifest()
    typer.echo(str(path))
