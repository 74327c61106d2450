"""``crosslm sweep SPEC`` (run or continue a sweep), ``crosslm sweep report DIR``, ``crosslm sweep list SPEC``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from crosslm_secure.clitools import console, fail
from crosslm_secure.errors import CrossLMError


class _RunByDefault(TyperGroup):
    """``crosslm sweep SPEC ...`` means ``crosslm sweep run SPEC ...``."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)


sweep_app = typer.Typer(
    cls=_RunByDefault,
    no_args_is_help=True,
    help="Grids of runs: `crosslm sweep experiments/sweeps/paper.yaml`; re-run the same command to continue.",
)


@sweep_app.command("run")
def run_command(
    spec: Annotated[Path, typer.Argument(help="Sweep file, e.g. experiments/sweeps/paper.yaml")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Fix a field in every cell: section.field=value")
    ] = None,
    max_parallel: Annotated[int | None, typer.Option(help="Cells at once (overrides the file's max_parallel)")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    output: Annotated[Path | None, typer.Option(help="Sweep folder (and its cells) instead of the file's")] = None,
) -> None:
    """Run every cell not finished yet (finished cells are skipped, partial ones resumed), then aggregate."""
    from crosslm_secure.sweep.execute import run_sweep
    from crosslm_secure.sweep.feasibility import check_cells_have_data
    from crosslm_secure.sweep.spec import load_sweep

    try:
        sweep = load_sweep(spec, extra_set=set_ or [], output_dir=output)
        if max_parallel is not None and max_parallel < 1:
            raise CrossLMError("sweep: --max-parallel must be >= 1")
        cells = sweep.cells()
        check_cells_have_data(sweep, cells)  # before the sweep folder is written
        console.print(f"sweep {sweep.spec.name}: {len(cells)} cells -> {sweep.output_dir} (cells in {sweep.cells_dir})")
        _manifest(sweep, cells)
        outcomes = run_sweep(sweep, max_parallel=max_parallel, progress=progress, log=console.print)
        _report(sweep.output_dir)
    except CrossLMError as exc:
        fail(exc)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        console.print(
            f"[bold red]{len(failed)} of {len(outcomes)} cells failed[/]; fix them and re-run the same command"
        )
        raise typer.Exit(1)
    console.print(f"[green]all {len(outcomes)} cells finished[/]")


@sweep_app.command("report")
def report_command(
    target: Annotated[
        Path, typer.Argument(help="Sweep folder (sweeps/paper) or sweep file (experiments/sweeps/paper.yaml)")
    ],
) -> None:
    """Re-aggregate a sweep: results.csv, tables.md and plots/ (unfinished cells are listed as such)."""
    from crosslm_secure.sweep.spec import load_sweep

    try:
        if target.is_file():
            sweep = load_sweep(target)
            _manifest(sweep, sweep.cells())
            target = sweep.output_dir
        _report(target)
    except CrossLMError as exc:
        fail(exc)


@sweep_app.command("list")
def list_command(
    spec: Annotated[Path, typer.Argument(help="Sweep file")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="As for `crosslm sweep`")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of {state, folder, values}.")] = False,
) -> None:
    """List the cells of a sweep file and the state of each (finished, partial, not started)."""
    from crosslm_secure.sweep.execute import cell_folder, cell_run_dir, run_state
    from crosslm_secure.sweep.spec import load_sweep

    try:
        sweep = load_sweep(spec, extra_set=set_ or [])
    except CrossLMError as exc:
        fail(exc)
    folders = [(cell, cell_folder(sweep, cell)) for cell in sweep.cells()]
    rows = [(run_state(cell_run_dir(folder)), folder, cell) for cell, folder in folders]
    if as_json:
        cells = [{"state": state, "folder": str(folder), "values": cell.values} for state, folder, cell in rows]
        typer.echo(json.dumps(cells, indent=2, default=str))
        return
    typer.echo(f"{'STATE':11} CELL FOLDER")
    for state, folder, _ in rows:
        typer.echo(f"{state:11} {folder}")


def _manifest(sweep, cells) -> None:
    from crosslm_secure.sweep.aggregate import write_manifest
    from crosslm_secure.sweep.execute import cell_folder

    write_manifest(
        sweep.output_dir,
        sweep.spec.name,
        list(sweep.spec.grid),
        sweep.spec.report.x,
        list(sweep.spec.report.baseline_method),
        [(cell_folder(sweep, c).resolve(), c.values) for c in cells],
    )


def _report(directory: Path) -> None:
    from crosslm_secure.sweep.aggregate import collect, write_results
    from crosslm_secure.sweep.plots import write_plots

    results = collect(directory)
    paths = write_results(directory, results)
    plots = write_plots(directory, results)
    console.print(paths["tables"].read_text(), highlight=False, markup=False)
    files = ", ".join(str(paths[k]) for k in ("csv", "gains", "tables") if k in paths)
    console.print(f"wrote {files} and {len(plots)} plots in {Path(directory) / 'plots'}")
