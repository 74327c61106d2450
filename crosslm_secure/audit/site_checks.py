"""The checks a site runs on itself, each as ``{"verdict", "summary", ...numbers}`` for its signed result.

A check decides only what its intervals decide: a figure whose interval cannot (too few records,
too wide, or reaching both sides of the limit) is ``not resolvable``, never ``pass``. Numbers are
scalars (or short lists of them) made JSON-safe; no record and no text of one ever goes in.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from crosslm_secure.audit.base import AuditError, CheckResult
from crosslm_secure.audit.canaries import epsilon_lower_bound
from crosslm_secure.audit.dp_audit import dp_outcome
from crosslm_secure.audit.mia import attack_client, put_metrics
from crosslm_secure.audit.population import AuditRun
from crosslm_secure.audit.site_ledger import LedgerComparison

SiteVerdict = Literal["pass", "fail", "not resolvable"]
NOT_RESOLVABLE: SiteVerdict = "not resolvable"


def combined_verdict(verdicts: list[str]) -> SiteVerdict:
    """fail if any check failed, else not resolvable if any could not decide, else pass."""
    if "fail" in verdicts:
        return "fail"
    return NOT_RESOLVABLE if NOT_RESOLVABLE in verdicts else "pass"


def ledger_check(comparison: LedgerComparison, site: str) -> dict[str, Any]:
    """Pass when the server's copy holds exactly the site's entries; fail naming the first that differs."""
    own = f"{site}'s ledger ({comparison.entries} {'entry' if comparison.entries == 1 else 'entries'})"
    if comparison.matches:
        summary = f"{own} equals the server's copy."
    else:
        summary = f"{own} and the server's copy differ: {comparison.difference}."
    return {
        "verdict": "pass" if comparison.matches else "fail",
        "summary": summary,
        "entries": comparison.entries,
        "server_entries": comparison.server_entries,
    }


def mia_check(run: AuditRun, site: str, *, progress: bool) -> dict[str, Any]:
    """LOSS, RMIA and LiRA on the site's SLM: its training records against its held-out ones.

    Fails where a run-level rule fires; passes only where every attack's AUC interval decides
    (:func:`~crosslm_secure.audit.roc.auc_undecided`, the rule the report marks figures by) and
    lies at or below ``audit.mia_max_auc``; otherwise it is not resolvable, saying why.
    """
    attacked = attack_client(run, site, progress=progress)
    limit = run.settings.mia_max_auc
    numbers: dict[str, Any] = dict(attacked.details)
    for name, metrics in attacked.metrics.items():
        put_metrics(numbers, name.lower(), metrics)
    aucs = ", ".join(f"{name} AUC {m.auc.text()}" for name, m in attacked.metrics.items())
    sides = f"{numbers['members']} members / {numbers['non_members']} held-out non-members"
    undecided = {name: why for name, m in attacked.metrics.items() if (why := m.undecided(limit))}
    if attacked.findings:
        verdict, summary = "fail", f"{site}: {aucs} ({sides}); " + "; ".join(attacked.findings) + "."
    elif undecided:
        verdict = NOT_RESOLVABLE
        whys = "; ".join(f"{name}: {why}" for name, why in undecided.items())
        summary = f"{site}: {aucs} ({sides}); the AUC intervals cannot decide ({whys})."
    else:
        verdict, summary = "pass", f"{site}: {aucs} ({sides}); every upper bound is at most audit.mia_max_auc {limit}."
    return {"verdict": verdict, "summary": summary, **signable_numbers(numbers, "mia")}


def dp_check(run: AuditRun, site: str, *, progress: bool) -> dict[str, Any]:
    """The one-run DP audit of the site's own training (white-box for a head-only SLM).

    Passes only where the audit could have shown a violation: if even every canary guess right
    gives a bound at or below the claimed epsilon, the audit cannot decide.
    """
    result = dp_outcome(run, site, progress=progress).result
    verdict: SiteVerdict = result.verdict
    summary = result.summary if not result.findings else f"{result.summary} " + "; ".join(result.findings) + "."
    if verdict == "pass" and not _could_fail(result):
        verdict = NOT_RESOLVABLE
        summary += " Even all guesses right would not exceed the claim: too few canaries to decide."
    return {"verdict": verdict, "summary": summary, **signable_numbers(result.numbers, "dp")}


def _could_fail(result: CheckResult) -> bool:
    n = result.numbers
    claimed = n["claimed_epsilon"]
    if not math.isfinite(claimed):
        return True  # no DP claimed: nothing to contradict, the run-level audit passes it too
    best = epsilon_lower_bound(n["canaries"], n["guesses"], n["guesses"], n["delta"], n["confidence"])
    return best > claimed


def signable_numbers(numbers: dict[str, Any], check: str) -> dict[str, Any]:
    """``numbers`` as canonical JSON takes them: infinities as "inf"/"-inf", NaN as null.

    Raises:
        AuditError: a number that is not a scalar or a list of scalars (the check is wrong).
    """
    return {str(key): _signable(value, check, str(key)) for key, value in numbers.items()}


def _signable(value: Any, check: str, key: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list | tuple):
        return [_signable(item, check, key) for item in value]
    raise AuditError(f"audit site: check {check} reports {key} as a {type(value).__name__}; report it as a number")
