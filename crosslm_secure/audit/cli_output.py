"""What the ``crosslm audit`` commands print: a line per check on stdout, or with ``--json`` one JSON
object on stdout and the lines on stderr; errors as one sentence on stderr."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from crosslm_secure.audit.base import AUDIT_DIR
from crosslm_secure.audit.registry import EXIT_ERROR, CheckOutcome
from crosslm_secure.audit.report import row_state
from crosslm_secure.audit.report_figures import not_resolvable
from crosslm_secure.audit.trust import SELF_ATTESTED_SENTENCE, is_self_attested


def print_outcome(outcome: CheckOutcome, as_json: bool = False) -> None:
    """A check's verdict line and findings: on stdout, or on stderr when stdout carries the JSON."""
    if outcome.result is None:
        typer.echo(f"{outcome.name}: ERROR: {outcome.error}", err=True)
        return
    result = outcome.result
    typer.echo(f"{outcome.name}: {row_state(outcome).upper()}: {result.summary}", err=as_json)
    for finding in result.findings:
        typer.echo(f"  - {finding}", err=as_json)
    if result.passed and is_self_attested(result):
        typer.echo(f"  note: {SELF_ATTESTED_SENTENCE}", err=as_json)


def error_exit(message: str, as_json: bool = False) -> int:
    """One sentence on stderr (and, with --json, ``{"error", "exit_code"}`` on stdout); the exit code 2."""
    typer.echo(f"error: {message}", err=True)
    if as_json:
        typer.echo(json.dumps({"error": message, "exit_code": EXIT_ERROR}, indent=2))
    return EXIT_ERROR


def print_json(run_dir: Path, outcomes: Sequence[CheckOutcome], code: int, **extra: object) -> None:
    """The machine-readable result on stdout."""
    checks = []
    for outcome in outcomes:
        entry: dict[str, object] = {"check": outcome.name, "state": row_state(outcome)}
        if outcome.result is None:
            entry["error"] = outcome.error
        else:
            result = outcome.result
            entry |= {"verdict": result.verdict, "summary": result.summary, "findings": result.findings}
            entry |= {"not_resolvable": not_resolvable(result)}
            entry |= {"settings": result.settings, "overrides": result.overrides}
            entry["result_file"] = str(Path(run_dir) / AUDIT_DIR / f"{outcome.name}.json")
        checks.append(entry)
    body = {"run": str(run_dir), **extra, "exit_code": code, "checks": checks}
    typer.echo(json.dumps(body, indent=2, default=str))


def print_site_json(run_dir: Path, site_dir: Path, audit: Any, overrides: Sequence[str], code: int) -> None:
    """A site audit's result on stdout: its verdict, each check, the overrides, where the signed result is."""
    checks = [{"check": name, **check} for name, check in audit.body["checks"].items()]
    body = {"run": str(run_dir), "site": str(site_dir), "verdict": audit.verdict, "exit_code": code}
    body |= {"overrides": list(overrides), "signed_result": str(audit.path), "checks": checks}
    typer.echo(json.dumps(body, indent=2, default=str))
