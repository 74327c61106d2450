"""The ``crosslm`` command. Every command calls the library; nothing is implemented here."""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from crosslm_secure.audit.cli import audit_app
from crosslm_secure.clitools import EXIT_STOPPED_EARLY, RunAlias, RunArgument, console, fail, pick_run, stdout_console
from crosslm_secure.crypto.cli import keys_app
from crosslm_secure.deploy.cli import deploy_app, pki_app
from crosslm_secure.errors import CrossLMError
from crosslm_secure.party_cli import sites_app
from crosslm_secure.report.budget_cli import budget_app
from crosslm_secure.runs_cli import runs_app
from crosslm_secure.sweep.cli import sweep_app

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    name="crosslm",
    help="Privacy-hardened CrossLM: one LLM and many small LMs improve each other across silos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(budget_app, name="budget", help="Privacy budgets of a run: epsilon spent and left per client.")
app.add_typer(keys_app, name="keys", help="Participant keys: create, fingerprint, enroll.")
app.add_typer(deploy_app, name="deploy", help="Run jobs on Flower across sites (TLS, node auth).")
app.add_typer(pki_app, name="pki", help="Deployment PKI: CA, SuperLink certificate, site credentials.")
app.add_typer(
    audit_app, name="audit", help="Compliance audits of a finished run and their report (exit 1 on any failure)."
)
app.add_typer(sites_app, name="sites", help="Party folders: a simulated pilot's, or check your own.")
app.add_typer(sweep_app, name="sweep", help="Grids of runs (epsilon x method x seed) with tables and plots.")
app.add_typer(runs_app, name="runs", help="The runs in a folder: method, task, epsilon, macro-F1s, audit verdict.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"crosslm-secure {metadata.version('crosslm-secure')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Privacy-hardened CrossLM: one LLM and many small LMs improve each other across silos."""


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="YAML config, e.g. experiments/configs/default.yaml")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: section.field=value")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue runs/<id> from its last completed round")] = None,
    sites: Annotated[
        Path | None,
        typer.Option(
            "--sites",
            help="Folder of party folders (server/, client-1/, ...): each party's own keys and records, each "
            "site's state in its own folder. Without it, the job's one data file is split into silos (a simulation).",
        ),
    ] = None,
) -> None:
    """Run a CrossLM job (or resume one) and write runs/<id>/ with summary.md and plots.

    Exit codes:
    0: the run finished every round.
    2: bad input; one sentence on stderr says what and how to fix it.
    3: the run ended early (privacy budget exhausted, too few clients left); its reason on stderr.
    """
    from crosslm_secure.config import load_config

    try:
        if resume is None and config is None:
            raise CrossLMError("run: give a config file (e.g. experiments/configs/default.yaml) or --resume runs/<id>")
        # A bad config or override is refused before the ML libraries load (a second, not ten).
        job = None if config is None or resume is not None else load_config(config, set_ or [])
        from crosslm_secure.party_run import resume_sites, run_sites
        from crosslm_secure.runner import resume_job, run_job

        if resume is not None and sites is not None:
            result = resume_sites(resume, sites, log=console.print)
        elif resume is not None:
            result = resume_job(resume, log=console.print)
        else:
            assert job is not None
            if sites is None:
                console.print("simulation: one data file split into silos; for party folders pass --sites DIR")
            result = run_job(job, log=console.print) if sites is None else run_sites(job, sites, log=console.print)
    except CrossLMError as exc:
        fail(exc)
    console.print(f"[green]done:[/] {result.store.root / 'summary.md'}")
    if result.outcome.stopped_early:
        console.print(f"[yellow]run ended early:[/] {escape(str(result.outcome.stopped_early))}", highlight=False)
        raise typer.Exit(EXIT_STOPPED_EARLY)


@app.command()
def report(
    run_dir: RunArgument = None,
    run_alias: RunAlias = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            help="Another run (runs/<id>) to put beside this one: its macro-F1 and the paired difference on the "
            "same test records.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Rebuild summary.md, report.html and the plots of a run from its saved files."""
    run_dir = pick_run("report", run_dir, run_alias)
    from crosslm_secure.config import config_from_dict
    from crosslm_secure.report.summary import write_report
    from crosslm_secure.runstore import RunStore
    from crosslm_secure.server.coordinator import RoundOutcome

    try:
        store = RunStore.open(run_dir)
        config = config_from_dict(store.config_dict())
        rows = store.rounds()
        stopped = next((e["reason"] for e in store.events() if e["event"] == "run_stopped"), None)
        excluded = {e["client"]: e["reason"] for e in store.events() if e["event"] == "client_excluded"}
        outcome = RoundOutcome(rows[-1]["round"] if rows else -1, stopped, excluded)
        write_report(
            store,
            config,
            outcome,
            slm_sources={n: config.slm_for(n).model for n in config.client_ids()},
            baseline=None if baseline is None else RunStore.open(baseline),
        )
    except CrossLMError as exc:
        fail(exc)
    console.print(f"wrote {store.root / 'summary.md'} and {store.root / 'report.html'}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="runs/<id> folders; the first is the reference for deltas")],
    out: Annotated[Path | None, typer.Option(help="Folder for comparison.md/.csv and curves.png")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON instead of a table.")] = False,
) -> None:
    """Put runs side by side: headline metrics, deltas vs the first run, config differences, curves."""
    from crosslm_secure.report.compare import compare_runs, comparison_json, rich_table, write_comparison

    try:
        comparison = compare_runs(runs)
        folder = out if out is not None else Path(runs[0]).parent / f"compare-{'-vs-'.join(comparison.runs)}"[:200]
        paths = write_comparison(comparison, folder)
    except CrossLMError as exc:
        fail(exc)
    console.print("wrote " + ", ".join(str(p) for p in paths))
    if as_json:
        typer.echo(json.dumps(comparison_json(comparison), indent=2))
    else:
        stdout_console().print(rich_table(comparison))


@app.command("config")
def config_command(
    check: Annotated[
        Path | None,
        typer.Option(help="Validate this YAML config against this machine (models, data) and say what is wrong"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --check: print {config, valid, error} as JSON on stdout.")
    ] = False,
) -> None:
    """Print the default configuration with a doc line per field, or validate a file."""
    from crosslm_secure.config import load_config, render_defaults
    from crosslm_secure.preflight import check_config

    if check is None:
        sys.stdout.write(render_defaults())
        return
    try:
        check_config(load_config(check))
    except CrossLMError as exc:
        if as_json:
            typer.echo(json.dumps({"config": str(check), "valid": False, "error": str(exc)}))
        fail(exc)
    if as_json:
        typer.echo(json.dumps({"config": str(check), "valid": True, "error": None}))
    else:
        typer.echo(f"{check} is valid")


@app.command("protocol-schema")
def protocol_schema() -> None:
    """Print the JSON Schema of every protocol message (protocols/messages.schema.json)."""
    from crosslm_secure.protocol.messages import schema_document

    sys.stdout.write(schema_document())


@app.command("bench")
def bench(
    examples: Annotated[int, typer.Option(help="Evaluator prompts for the LLM evaluation rows.")] = 48,
    config: Annotated[Path, typer.Option(help="Job whose LLM, task and evaluator set are timed.")] = Path(
        "experiments/configs/default.yaml"
    ),
    scale: Annotated[bool, typer.Option(help="Also time the CKKS round for K in 3..100 and N in 100..10000.")] = False,
) -> None:
    """Print each cost as a ratio against its baseline; write benchmarks/results/ and a README row."""
    from crosslm_secure.bench import run_bench

    run_bench(examples=examples, config=str(config), with_scale=scale)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # python -m crosslm_secure.cli
    main()
