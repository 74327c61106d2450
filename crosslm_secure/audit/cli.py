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
check whose interval cannot decide (too few records, too wide, or reaching both sides of the
limit) is ``not resolvable``, not a pass.

``--registry FILE`` (on ``all``, ``protocol`` and ``ledger``) is the reviewer's trust anchor: a
registry of public keys (``crosslm keys enroll``) whose fingerprints were compared out of band.
Every identity in ``run.json`` must be the registry's, every party of the run must be in it,
and ledger entries, transcript claims and the coordinator's seal are verified with its keys.
Without it the keys are the ones ``run.json`` names: self-attested by the run folder, which
anyone who can write it can re-key. A check that passes that way prints ``SELF-ATTESTED``, and
the report's overall verdict is ``SELF-ATTESTED``, never ``PASS``.
``--site-audits DIR`` (with ``--registry``) checks every signed site audit under DIR
(audit/site_audits.py); a client without one makes the result ``INCOMPLETE``.

Exit codes (for pipelines), the report's overall verdict: 0 PASS: every check passed with a
pinned registry; 1 FAIL: a check failed (a forged or refused document included), whatever the
others did; 2 INCOMPLETE or could not run: a check that could not run or was never run (``audit
report`` on a partial set), a missing or unresolvable site audit, or bad input (a bad run folder,
a registry that lacks a party), with one sentence on stderr; 3 SELF-ATTESTED: every check passed,
but no ``--registry`` pinned the keys they were checked against. One check exits with its own
verdict the same way. ``site``: 0 pass, 1 fail or not resolvable, 2 could not run.

``--json`` (every command here) prints the result as one JSON object on stdout (each check's
verdict, summary, findings, figures not resolvable, settings as applied and overrides; the overall
verdict and exit code; the report's paths) and the per-check lines on stderr. Each saved ``audit/<name>.json`` records
the settings the check applied and the ``--set`` overrides among them.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from crosslm_secure.audit.base import AUDIT_DIR, AuditError, save_result
from crosslm_secure.audit.cli_output import error_exit, print_json, print_outcome, print_site_json
from crosslm_secure.audit.registry import (
    CHECK_HELP,
    CHECKS,
    EXIT_ERROR,
    EXIT_FAIL,
    EXIT_PASS,
    EXIT_SELF_ATTESTED,
    RUN_ORDER,
    SITES,
    CheckOutcome,
    run_check,
    saved_outcomes,
)
from crosslm_secure.audit.report import overall_verdict, remember_command, require_results, write_report
from crosslm_secure.audit.runinfo import audit_settings, run_config
from crosslm_secure.audit.site_audits import (
    AT_THE_SITES,
    at_the_sites,
    audited_at_the_sites,
    require_site_audits,
    run_site_audits_check,
)
from crosslm_secure.audit.trust import TRUSTING_CHECKS, TrustAnchor
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
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout (the per-check lines go to stderr).")
]
VERDICT_EXIT = {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL, "INCOMPLETE": EXIT_ERROR, "SELF-ATTESTED": EXIT_SELF_ATTESTED}
"""The exit code of each overall verdict (``audit all``, ``audit report``)."""
SiteAuditsOption = Annotated[
    Path | None,
    typer.Option("--site-audits", help="A folder of the sites' signed audits (needs --registry)."),
]


def audit_one(
    name: str,
    run_dir: Path,
    overrides: Sequence[str] = (),
    *,
    progress: bool = True,
    registry: Path | None = None,
    as_json: bool = False,
) -> int:
    """Run one check, print its verdict and findings (or JSON), and return the exit code."""
    try:
        anchor = _anchor(run_dir, overrides, registry)
    except AuditError as exc:
        return error_exit(str(exc), as_json)
    outcome = _run(name, run_dir, overrides, progress, anchor, as_json)
    if as_json:
        print_json(run_dir, [outcome], outcome.exit_code)
    return outcome.exit_code


def _run(
    name: str, run_dir: Path, overrides: Sequence[str], progress: bool, anchor: TrustAnchor, as_json: bool
) -> CheckOutcome:
    """Run one check, record in its saved result the settings it applied and the overrides, print its lines."""
    outcome = run_check(name, run_dir, overrides, progress=progress, anchor=anchor)
    if outcome.result is not None:
        outcome.result.settings = audit_settings(run_dir, overrides).model_dump(mode="json")
        outcome.result.overrides = list(overrides)
        save_result(run_dir, outcome.result)
    print_outcome(outcome, as_json)
    return outcome


def audit_all(
    run_dir: Path,
    overrides: Sequence[str] = (),
    *,
    progress: bool = True,
    registry: Path | None = None,
    site_audits: Path | None = None,
    as_json: bool = False,
) -> int:
    """Run every check (and the site audits' check), write the report, print the verdicts, return the exit code."""
    try:
        anchor = _anchor(run_dir, overrides, registry)
        if site_audits is not None:
            require_site_audits(anchor, site_audits)
    except AuditError as exc:
        return error_exit(str(exc), as_json)
    remember_command(run_dir, _command("all", run_dir, overrides, registry, site_audits))
    at_sites = audited_at_the_sites(run_dir)
    outcomes = {}
    for name in RUN_ORDER:
        if not (at_sites and name in AT_THE_SITES):
            outcomes[name] = _run(name, run_dir, overrides, progress, anchor, as_json)
    (Path(run_dir) / AUDIT_DIR / f"{SITES}.json").unlink(missing_ok=True)  # never a stale site check
    sites = (
        None if site_audits is None else CheckOutcome(SITES, result=run_site_audits_check(run_dir, anchor, site_audits))
    )
    if at_sites:
        for name, row in at_the_sites(run_dir, sites and sites.result).items():
            outcomes[name] = CheckOutcome(name, error=row) if isinstance(row, str) else CheckOutcome(name, result=row)
            print_outcome(outcomes[name], as_json)
    ordered = [outcomes[name] for name in CHECKS] + ([sites] if sites is not None else [])
    if sites is not None:
        print_outcome(sites, as_json)
    return _report(run_dir, ordered, as_json)


def rebuild_report(run_dir: Path, *, as_json: bool = False) -> int:
    """Rewrite the report from saved results; the exit code is the overall verdict's (2 while a check is not run)."""
    try:
        outcomes = saved_outcomes(run_dir)
        require_results(outcomes, run_dir)
    except CrossLMError as exc:
        return error_exit(str(exc), as_json)
    missing = [name for name in CHECKS if name not in {o.name for o in outcomes}]
    if missing:
        typer.echo(f"not run yet: {', '.join(missing)}", err=True)
    return _report(run_dir, outcomes, as_json)


def _report(run_dir: Path, outcomes: Sequence[CheckOutcome], as_json: bool) -> int:
    """Write the report, print the overall verdict (or the JSON), return the verdict's exit code."""
    try:
        md_path, html_path = write_report(run_dir, outcomes)
    except CrossLMError as exc:
        return error_exit(str(exc), as_json)
    verdict = overall_verdict(outcomes)
    code = VERDICT_EXIT[verdict]
    typer.echo(f"overall: {verdict}; report: {md_path} and {html_path}", err=as_json)
    if as_json:
        print_json(run_dir, outcomes, code, overall=verdict, report={"markdown": str(md_path), "html": str(html_path)})
    return code


def _anchor(run_dir: Path, overrides: Sequence[str], registry: Path | None) -> TrustAnchor:
    """The reviewer's trust anchor, refused when it lacks a party of the run.

    Raises:
        AuditError: not a run folder, a bad override, or a registry that is missing, malformed or incomplete.
    """
    config = run_config(run_dir, overrides)
    anchor = TrustAnchor.load(registry)
    anchor.require_parties(RunStore(run_dir), config)
    return anchor


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
        run_dir: RunArgument = None,
        set_: SetOption = None,
        progress: ProgressOption = True,
        run: RunAlias = None,
        as_json: JsonOption = False,
    ) -> None:
        run = pick_run(f"audit {name}", run_dir, run, EXIT_ERROR)
        raise typer.Exit(audit_one(name, run, set_ or [], progress=progress, as_json=as_json))

    def trusting_command(
        run_dir: RunArgument = None,
        set_: SetOption = None,
        progress: ProgressOption = True,
        registry: RegistryOption = None,
        run: RunAlias = None,
        as_json: JsonOption = False,
    ) -> None:
        run = pick_run(f"audit {name}", run_dir, run, EXIT_ERROR)
        raise typer.Exit(audit_one(name, run, set_ or [], progress=progress, registry=registry, as_json=as_json))

    def dp_command(
        run_dir: RunArgument = None,
        set_: SetOption = None,
        progress: ProgressOption = True,
        mode: ModeOption = None,
        run: RunAlias = None,
        as_json: JsonOption = False,
    ) -> None:
        run = pick_run(f"audit {name}", run_dir, run, EXIT_ERROR)
        overrides = (set_ or []) + ([f"audit.dp_mode={mode}"] if mode else [])
        raise typer.Exit(audit_one(name, run, overrides, progress=progress, as_json=as_json))

    if name == "dp":
        command = dp_command  # noqa: F811 - the DP audit alone takes --mode
    if name in TRUSTING_CHECKS:
        command = trusting_command  # noqa: F811 - checks of signatures take the reviewer's --registry

    command.__doc__ = f"{CHECK_HELP[name]} Writes audit/{name}.json (with the settings it applied)."
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
    as_json: JsonOption = False,
) -> None:
    """Run every check and write audit/report.md and .html (exit 0 PASS, 1 FAIL, 2 INCOMPLETE, 3 SELF-ATTESTED)."""
    run = pick_run("audit all", run_dir, run, EXIT_ERROR)
    code = audit_all(run, set_ or [], progress=progress, registry=registry, site_audits=site_audits, as_json=as_json)
    raise typer.Exit(code)


SiteDirOption = Annotated[Path, typer.Option("--site", help="The site's own folder, e.g. sites/client-1.")]


def audit_site(
    site_dir: Path, run_dir: Path, overrides: Sequence[str] = (), *, progress: bool = True, as_json: bool = False
) -> int:
    """Run the site audit, print each check's verdict and where the signed result is, return the exit code."""
    from crosslm_secure.audit.site_audit import run_site_audit

    try:
        audit = run_site_audit(site_dir, run_dir, overrides, progress=progress)
    except CrossLMError as exc:
        return error_exit(str(exc), as_json)
    for name, check in audit.body["checks"].items():
        typer.echo(f"{name}: {check['verdict'].upper()}: {check['summary']}", err=as_json)
    typer.echo(f"overall: {audit.verdict}; signed result: {audit.path}", err=as_json)
    code = EXIT_PASS if audit.verdict == "pass" else EXIT_FAIL
    if as_json:
        print_site_json(run_dir, site_dir, audit, overrides, code)
    return code


@audit_app.command("site")
def site_command(
    site: SiteDirOption,
    run_dir: RunArgument = None,
    set_: SetOption = None,
    progress: ProgressOption = True,
    run: RunAlias = None,
    as_json: JsonOption = False,
) -> None:
    """At a site: MIA and DP audits of its own model on its own records and its ledger against the server's
    copy; writes DIR/<site>/audit/<run-id>.json signed with the site's key (exit 1: a check failed or
    could not be decided)."""
    run = pick_run("audit site", run_dir, run, EXIT_ERROR)
    raise typer.Exit(audit_site(site, run, set_ or [], progress=progress, as_json=as_json))


@audit_app.command("report")
def report_command(run_dir: RunArgument = None, run: RunAlias = None, as_json: JsonOption = False) -> None:
    """Rebuild audit/report.md and audit/report.html from the saved check results (exit codes as audit all;
    2 while a check has not been run)."""
    run = pick_run("audit report", run_dir, run, EXIT_ERROR)
    raise typer.Exit(rebuild_report(run, as_json=as_json))


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
    parser.add_argument("--json", action="store_true", dest="as_json", help="the result as JSON on stdout")
    args = parser.parse_args(argv)
    if name == "report":
        return rebuild_report(args.run, as_json=args.as_json)
    if name == "all":
        return audit_all(
            args.run,
            args.overrides,
            progress=not args.no_progress,
            registry=args.registry,
            site_audits=args.site_audits,
            as_json=args.as_json,
        )
    registry = getattr(args, "registry", None)
    progress = not args.no_progress
    return audit_one(name, args.run, args.overrides, progress=progress, registry=registry, as_json=args.as_json)
