"""``crosslm audit``: run the compliance checks on a finished run and write the report.

``crosslm audit <mia|dp|protocol|ledger> RUN [--set audit.x=y]`` runs one check,
``crosslm audit all RUN [--registry FILE] [--site-audits DIR]`` runs every check and
writes ``audit/report.md`` and ``audit/report.html``, ``crosslm audit report RUN``
rebuilds the report from saved results (``--run RUN`` works too). The scripts in ``audits/`` call :func:`script_main`
and behave the same.

``crosslm audit site RUN --site DIR/<site> [--set audit.x=y]`` runs on a site's machine:
the membership attacks and the DP audit of the site's own model on its own records (its
training split against its held-out split), and a check that the server's copy of its ledger
in the run folder holds exactly the site's entries. It writes ``DIR/<site>/audit/<run-id>.json``
signed with the site's key, for the reviewer; no record leaves the site. A run whose sites
trained on their own files is audited this way, at each site, not with ``mia``/``dp``. A
check whose interval is too wide to decide (too few records) is ``not resolvable``, not a pass.

``--registry FILE`` (on ``all``, ``protocol`` and ``ledger``) is the reviewer's trust anchor: a
registry of public keys (``crosslm keys enroll``) whose fingerprints were compared out of band.
Every identity in ``run.json`` must be the registry's, every party of the run must be in it,
and ledger entries, transcript claims and the coordinator's seal are verified with its keys.
Without it the keys are the ones ``run.json`` names: self-attested by the run folder, which
anyone who can write it can re-key. A check that passes that way prints ``SELF-ATTESTED``, and
the report's overall verdict is ``SELF-ATTESTED``, never ``PASS``.
``--site-audits DIR`` (with ``--registry``) checks every signed site audit under DIR
(audit/site_audits.py); a client without one makes the result ``INCOMPLETE``.

Exit codes (for pipelines): 0 PASS: every check passed with a pinned registry; 1 FAIL: a check
failed (a forged or refused document included); 2 INCOMPLETE or could not run: a check that
could not run, a missing or unresolvable site audit, or bad input (a bad run folder, a registry
that lacks a party), with one sentence on stderr; 3 SELF-ATTESTED: every check passed, but no
``--registry`` pinned the keys they were checked against. ``site``: 0 pass, 1 fail or not
resolvable, 2 could not run.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from crosslm_secure.audit.base import AUDIT_DIR, AuditError
from crosslm_secure.audit.registry import (
    CHECK_HELP,
    CHECKS,
    EXIT_ERROR,
    EXIT_FAIL,
    EXIT_PASS,
    RUN_ORDER,
    SITES,
    CheckOutcome,
    overall_exit_code,
    run_check,
    saved_outcomes,
)
from crosslm_secure.audit.report import overall_verdict, remember_command, require_results, row_state, write_report
from crosslm_secure.audit.runinfo import run_config
from crosslm_secure.audit.site_audits import (
    AT_THE_SITES,
    at_the_sites,
    audited_at_the_sites,
    require_site_audits,
    run_site_audits_check,
)
from crosslm_secure.audit.trust import SELF_ATTESTED_SENTENCE, TRUSTING_CHECKS, TrustAnchor, is_self_attested
from crosslm_secure.clitools import RunAlias, RunArgument, pick_run
from crosslm_secure.errors import CrossLMError
from crosslm_secure.runstore import RunStore

for _variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_variable, "1")  # the attacks load models; never from a hub

audit_app = typer.Typer(
    help="Compliance audits of a finished run: membership inference, DP, protocol, ledger; one report; "
    "and a site's signed audit of itself (site).",
    no_args_is_help=True,
)

SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override an audit setting: audit.field=value (repeatable).")
]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")]
RegistryOption = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="The registry of public keys you pinned (fingerprints compared out of band); without it the "
        "run folder's own keys are used and a pass is reported as SELF-ATTESTED (exit 3).",
    ),
]
SiteAuditsOption = Annotated[
    Path | None,
    typer.Option("--site-audits", help="A folder of the sites' signed audits (needs --registry)."),
]


def audit_one(
    name: str, run_dir: Path, overrides: Sequence[str] = (), *, progress: bool = True, registry: Path | None = None
) -> int:
    """Run one check, print its verdict and findings, and return the exit code."""
    try:
        anchor = _anchor(run_dir, overrides, registry)
    except AuditError as exc:
        return _error(str(exc))
    outcome = run_check(name, run_dir, overrides, progress=progress, anchor=anchor)
    _print_outcome(outcome)
    return outcome.exit_code


def audit_all(
    run_dir: Path,
    overrides: Sequence[str] = (),
    *,
    progress: bool = True,
    registry: Path | None = None,
    site_audits: Path | None = None,
) -> int:
    """Run every check (and the site audits' check), write the report, print the verdicts, return the exit code."""
    try:
        anchor = _anchor(run_dir, overrides, registry)
        if site_audits is not None:
            require_site_audits(anchor, site_audits)
    except AuditError as exc:
        return _error(str(exc))
    remember_command(run_dir, _command("all", run_dir, overrides, registry, site_audits))
    at_sites = audited_at_the_sites(run_dir)
    outcomes = {}
    for name in RUN_ORDER:
        if not (at_sites and name in AT_THE_SITES):
            outcomes[name] = run_check(name, run_dir, overrides, progress=progress, anchor=anchor)
            _print_outcome(outcomes[name])
    (Path(run_dir) / AUDIT_DIR / f"{SITES}.json").unlink(missing_ok=True)  # never a stale site check
    sites = (
        None if site_audits is None else CheckOutcome(SITES, result=run_site_audits_check(run_dir, anchor, site_audits))
    )
    if at_sites:
        for name, row in at_the_sites(run_dir, sites and sites.result).items():
            outcomes[name] = CheckOutcome(name, error=row) if isinstance(row, str) else CheckOutcome(name, result=row)
            _print_outcome(outcomes[name])
    ordered = [outcomes[name] for name in CHECKS] + ([sites] if sites is not None else [])
    if sites is not None:
        _print_outcome(sites)
    try:
        md_path, html_path = write_report(run_dir, ordered)
    except CrossLMError as exc:
        return _error(str(exc))
    typer.echo(f"overall: {overall_verdict(ordered)}; report: {md_path} and {html_path}")
    return overall_exit_code(ordered)


def rebuild_report(run_dir: Path) -> int:
    """Rewrite the report from saved results; the exit code reflects those results."""
    try:
        outcomes = saved_outcomes(run_dir)
        require_results(outcomes, run_dir)
        md_path, html_path = write_report(run_dir, outcomes)
    except CrossLMError as exc:
        return _error(str(exc))
    missing = [name for name in CHECKS if name not in {o.name for o in outcomes}]
    typer.echo(f"overall: {overall_verdict(outcomes)}; report: {md_path} and {html_path}")
    if missing:
        typer.echo(f"not run yet: {', '.join(missing)}", err=True)
    return overall_exit_code(outcomes)


def _anchor(run_dir: Path, overrides: Sequence[str], registry: Path | None) -> TrustAnchor:
    """The reviewer's trust anchor, refused when it lacks a party of the run.

    Raises:
        AuditError: not a run folder, a bad override, or a registry that is missing, malformed or incomplete.
    """
    config = run_config(run_dir, overrides)
    anchor = TrustAnchor.load(registry)
    anchor.require_parties(RunStore(run_dir), config)
    return anchor


def _print_outcome(outcome: CheckOutcome) -> None:
    if outcome.result is None:
        typer.echo(f"{outcome.name}: ERROR: {outcome.error}", err=True)
        return
    result = outcome.result
    typer.echo(f"{outcome.name}: {row_state(outcome).upper()}: {result.summary}")
    for finding in result.findings:
        typer.echo(f"  - {finding}")
    if result.passed and is_self_attested(result):
        typer.echo(f"  note: {SELF_ATTESTED_SENTENCE}")


def _error(message: str) -> int:
    typer.echo(f"error: {message}", err=True)
    return EXIT_ERROR


def _command(
    name: str, run_dir: Path, overrides: Sequence[str], registry: Path | None = None, site_audits: Path | None = None
) -> str:
    words = ["crosslm", "audit", name, "--run", str(run_dir)]
    for item in overrides:
        words += ["--set", item]
    words += ["--registry", str(registry)] if registry is not None else []
    words += ["--site-audits", str(site_audits)] if site_audits is not None else []
    return shlex.join(words)


ModeOption = Annotated[
    str | None,
    typer.Option(
        "--mode",
        help="white-box (gradient canaries, head-only SLMs), black-box (input canaries) or auto (default: "
        "white-box where it fits); same as --set audit.dp_mode=...",
    ),
]


def _register(name: str) -> None:
    def command(
        run_dir: RunArgument = None, set_: SetOption = None, progress: ProgressOption = True, run: RunAlias = None
    ) -> None:
        run = pick_run(f"audit {name}", run_dir, run, EXIT_ERROR)
        raise typer.Exit(audit_one(name, run, set_ or [], progress=progress))

    def trusting_command(
        run_dir: RunArgument = None,
        set_: SetOption = None,
        progress: ProgressOption = True,
        registry: RegistryOption = None,
        run: RunAlias = None,
    ) -> None:
        run = pick_run(f"audit {name}", run_dir, run, EXIT_ERROR)
        raise typer.Exit(audit_one(name, run, set_ or [], progress=progress, registry=registry))

    def dp_command(
        run_dir: RunArgument = None,
        set_: SetOption = None,
        progress: ProgressOption = True,
        mode: ModeOption = None,
        run: RunAlias = None,
    ) -> None:
        run = pick_run(f"audit {name}", run_dir, run, EXIT_ERROR)
        overrides = (set_ or []) + ([f"audit.dp_mode={mode}"] if mode else [])
        raise typer.Exit(audit_one(name, run, overrides, progress=progress))

    if name == "dp":
        command = dp_command  # noqa: F811 - the DP audit alone takes --mode
    if name in TRUSTING_CHECKS:
        command = trusting_command  # noqa: F811 - checks of signatures take the reviewer's --registry

    command.__doc__ = f"{CHECK_HELP[name]} Writes audit/{name}.json."
    audit_app.command(name)(command)


for _name in CHECKS:
    _register(_name)


@audit_app.command("all")
def all_command(
    run_dir: RunArgument = None,
    set_: SetOption = None,
    progress: ProgressOption = True,
    registry: RegistryOption = None,
    site_audits: SiteAuditsOption = None,
    run: RunAlias = None,
) -> None:
    """Run every check and write audit/report.md and .html (exit 0 PASS, 1 FAIL, 2 INCOMPLETE, 3 SELF-ATTESTED)."""
    run = pick_run("audit all", run_dir, run, EXIT_ERROR)
    raise typer.Exit(audit_all(run, set_ or [], progress=progress, registry=registry, site_audits=site_audits))


SiteDirOption = Annotated[Path, typer.Option("--site", help="The site's own folder, e.g. sites/client-1.")]


def audit_site(site_dir: Path, run_dir: Path, overrides: Sequence[str] = (), *, progress: bool = True) -> int:
    """Run the site audit, print each check's verdict and where the signed result is, return the exit code."""
    from crosslm_secure.audit.site_audit import run_site_audit

    try:
        audit = run_site_audit(site_dir, run_dir, overrides, progress=progress)
    except CrossLMError as exc:
        return _error(str(exc))
    for name, check in audit.body["checks"].items():
        typer.echo(f"{name}: {check['verdict'].upper()}: {check['summary']}")
    typer.echo(f"overall: {audit.verdict}; signed result: {audit.path}")
    return EXIT_PASS if audit.verdict == "pass" else EXIT_FAIL


@audit_app.command("site")
def site_command(
    site: SiteDirOption,
    run_dir: RunArgument = None,
    set_: SetOption = None,
    progress: ProgressOption = True,
    run: RunAlias = None,
) -> None:
    """At a site: MIA and DP audits of its own model on its own records and its ledger against the server's
    copy; writes DIR/<site>/audit/<run-id>.json signed with the site's key (exit 1: a check failed or
    could not be decided)."""
    run = pick_run("audit site", run_dir, run, EXIT_ERROR)
    raise typer.Exit(audit_site(site, run, set_ or [], progress=progress))


@audit_app.command("report")
def report_command(run_dir: RunArgument = None, run: RunAlias = None) -> None:
    """Rebuild audit/report.md and audit/report.html from the saved check results."""
    run = pick_run("audit report", run_dir, run, EXIT_ERROR)
    raise typer.Exit(rebuild_report(run))


def script_main(name: str, argv: Sequence[str] | None = None) -> int:
    """Entry of ``audits/<name>.py``: same options and exit codes as ``crosslm audit <name>``."""
    parser = argparse.ArgumentParser(
        prog=f"audits/{name}.py",
        description=f"{CHECK_HELP.get(name, 'Every audit and the report.')} Same as `crosslm audit {name}`.",
    )
    parser.add_argument("--run", required=True, type=Path, help="the run folder, e.g. runs/<id>")
    if name != "report":
        parser.add_argument("--set", action="append", default=[], dest="overrides", help="audit.field=value")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    if name in (*TRUSTING_CHECKS, "all"):
        parser.add_argument("--registry", type=Path, default=None, help="the registry of public keys you pinned")
    if name == "all":
        parser.add_argument("--site-audits", type=Path, default=None, help="a folder of signed site audits")
    args = parser.parse_args(argv)
    if name == "report":
        return rebuild_report(args.run)
    if name == "all":
        return audit_all(
            args.run,
            args.overrides,
            progress=not args.no_progress,
            registry=args.registry,
            site_audits=args.site_audits,
        )
    registry = getattr(args, "registry", None)
    return audit_one(name, args.run, args.overrides, progress=not args.no_progress, registry=registry)
