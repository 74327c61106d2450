"""``crosslm runs list [DIR]`` and ``crosslm runs show RUN``: what runs there are and how each went."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from crosslm_secure.clitools import RunAlias, RunArgument, console, fail, pick_run, stdout_console
from crosslm_secure.config import RunConfig
from crosslm_secure.errors import CrossLMError
from crosslm_secure.runs_index import RunRow, list_runs, run_row

runs_app = typer.Typer(help="The runs in a folder and a run's headline results.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DEFAULT_RUNS_DIR: Path = RunConfig.model_fields["output_dir"].default


@runs_app.command("list")
def list_command(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="The folder that holds run folders (run.output_dir).")
    ] = DEFAULT_RUNS_DIR,
    as_json: JsonOption = False,
) -> None:
    """One row per run: id, method, task and data, target epsilon, last-round macro-F1s, audit verdict, date."""
    try:
        rows, skipped = list_runs(directory)
    except CrossLMError as exc:
        fail(exc)
    for folder, reason in skipped.items():
        console.print(f"skipped {escape(folder)}: {escape(reason)}", highlight=False)
    if as_json:
        typer.echo(json.dumps([row.to_json() for row in rows], indent=2))
        return
    if not rows:
        console.print(f"no runs in {escape(str(directory))}", highlight=False)
        return
    stdout_console().print(_table(rows, f"Runs in {directory}"))


@runs_app.command("show")
def show_command(run_dir: RunArgument = None, as_json: JsonOption = False, run_alias: RunAlias = None) -> None:
    """A run's method, task, data, target epsilon, macro-F1s and epsilon per client, and its audit checks."""
    run = pick_run("runs show", run_dir, run_alias)
    try:
        row = run_row(run)
    except CrossLMError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(row.to_json(), indent=2))
        return
    for key, value in row.to_json().items():
        if key not in ("clients", "checks"):
            typer.echo(f"{key}: {_text(value)}")
    for client, values in row.clients.items():
        typer.echo(f"client {client}: epsilon {_text(values['epsilon'])}, SLM macro-F1 {_text(values['slm_macro_f1'])}")
    for check, state in row.checks.items():
        typer.echo(f"audit {check}: {state}")


def _table(rows: list[RunRow], title: str) -> Table:
    table = Table(title=title)
    for column in ("run", "method", "task (data)", "target eps", "SLM F1", "LLM F1", "audit", "created"):
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = [
            row.run_id,
            _text(row.method),
            f"{_text(row.task)} ({_text(row.data_source)})",
            _text(row.to_json()["target_epsilon"]),
            _text(row.slm_macro_f1),
            _text(row.llm_macro_f1),
            _text(row.audit),
            _text(row.created),
        ]
        table.add_row(*(escape(cell) for cell in cells))  # a run id or task is text, not markup
    return table


def _text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


@runs_app.command("mlflow")
def mlflow_command(
    run_dir: RunArgument = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="MLflow store (default: a local folder, mlruns/ beside the run)."),
    ] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="MLflow experiment (default: the run's run.name).")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Log it again over an earlier log of this run.")] = False,
    as_json: JsonOption = False,
    run_alias: RunAlias = None,
) -> None:
    """Log a run to MLflow: its resolved config as parameters, its metrics per round, its reports as artefacts.

    Needs the optional extra: pip install '.[mlflow]'.
    """
    run = pick_run("runs mlflow", run_dir, run_alias)
    from crosslm_secure.tracking import log_run

    try:
        logged = log_run(run, tracking_uri=tracking_uri, experiment=experiment, replace=replace)
    except CrossLMError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(logged.to_json(), indent=2))
        return
    typer.echo(
        f"logged {run.name} to MLflow: experiment {logged.experiment!r}, run {logged.mlflow_run_id}, "
        f"{logged.params} parameters, {logged.metrics} metric values, {len(logged.artefacts)} artefacts "
        f"({logged.tracking_uri})"
    )
