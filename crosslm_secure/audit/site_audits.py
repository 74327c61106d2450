"""The sites' own audits (``--site-audits DIR``), checked against the pinned registry and the run.

A site runs its audits on its own records and hands the reviewer a signed document
(:func:`crosslm_secure.crypto.signed.sign_document`, kind ``site-audit``) whose body is::

    {"schema": "crosslm-site-audit/1", "run_id": str, "site": str,
     "verdict": "pass" | "fail" | "not resolvable",
     "ledger": {"entries": int, "last_hash": str, "matches_server_copy": bool},
     "checks": {name: {"verdict": str, "summary": str, ...}}, "model_sha256": str, "created": iso8601}

Every such document under DIR (``*.json``, recursively; other JSON files are skipped) must
verify as a registry key, be signed by the site it audits, and carry that site's ledger head,
which must be the head of the server's copy ``clients/<site>/ledger.jsonl``. Verdicts:

* **fail**: a document is refused (not signed by a registered key, signed by another party
  than its site, malformed, of a party that is not a client of the run), a site's ledger head
  differs from the server's copy, or a site's own audit failed;
* **incomplete**: nothing failed, but a client of the run has no site audit of this run, or a
  site's audit could not resolve its result ("not resolvable");
* **pass**: every client handed a passing audit of this run whose ledger head matches.

A document of another run is refused and named in the table, but does not fail the check: a
folder of site audits may hold several runs'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crosslm_secure.audit.base import AuditError, CheckResult, Table, Verdict, save_result
from crosslm_secure.audit.runinfo import run_config
from crosslm_secure.audit.trust import TrustAnchor
from crosslm_secure.crypto.keys import Registry
from crosslm_secure.crypto.signed import SCHEMA as SIGNED_SCHEMA
from crosslm_secure.crypto.signed import verify_document
from crosslm_secure.errors import CryptoError
from crosslm_secure.privacy.ledger import LedgerError, ledger_path, load_entries
from crosslm_secure.runstore import PARTIES_SITES, RunStore

SITE_AUDIT_KIND = "site-audit"
SITE_AUDIT_SCHEMA = "crosslm-site-audit/1"
SITE_VERDICTS = ("pass", "fail", "not resolvable")


@dataclass
class SiteAudit:
    """One document found under DIR, after checking: its site, its verdict, and what is wrong."""

    path: Path
    site: str = "?"
    verdict: str = "refused"
    entries: int | None = None
    problems: list[str] = field(default_factory=list)
    other_run: str | None = None
    checks: dict[str, str] = field(default_factory=dict)
    """Each of the site's own checks and its verdict (``mia``, ``dp``, ``ledger``)."""


def find_site_audits(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every signed ``site-audit`` document under ``folder`` (``*.json``, recursively), by path."""
    found = []
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue  # not a JSON document: not a site audit (other files live in party folders too)
        if isinstance(raw, dict) and raw.get("schema") == SIGNED_SCHEMA and raw.get("kind") == SITE_AUDIT_KIND:
            found.append((path, raw))
    return found


def check_site_audit(
    path: Path, document: dict[str, Any], registry: Registry, run_dir: Path, clients: list[str]
) -> SiteAudit:
    """One site audit against the registry, this run (its ``clients``) and the server's copy of the site's ledger."""
    audit = SiteAudit(path)
    try:
        body = verify_document(document, SITE_AUDIT_KIND, registry, where=str(path))
    except CryptoError as exc:
        audit.problems.append(f"refused: {exc}")
        return audit
    audit.site = str(body.get("site"))
    problem = _body_problem(body, str(document["signer"]), clients)
    if problem is not None:
        audit.problems.append(f"{path}: refused: {problem}")
    elif body["run_id"] != RunStore(run_dir).run_id:
        audit.other_run = str(body["run_id"])
    else:
        audit.verdict = str(body["verdict"])
        audit.checks = {str(k): str(c.get("verdict")) for k, c in body["checks"].items() if isinstance(c, dict)}
        audit.entries = int(body["ledger"]["entries"])
        audit.problems += _ledger_problems(path, body, run_dir)
        if audit.verdict == "fail":
            failed = [f"{name}: {c.get('summary')}" for name, c in body["checks"].items() if _failed(c)]
            audit.problems.append(f"{path}: {audit.site}'s own audit failed ({'; '.join(failed) or 'no check named'})")
    return audit


def _failed(check: Any) -> bool:
    return isinstance(check, dict) and check.get("verdict") == "fail"


def _body_problem(body: dict[str, Any], signer: str, clients: list[str]) -> str | None:
    """Why a verified body is not a site audit of a client (None when it is)."""
    ledger = body.get("ledger")
    if body.get("schema") != SITE_AUDIT_SCHEMA or not isinstance(body.get("run_id"), str):
        return f"its body is not a {SITE_AUDIT_SCHEMA} audit with a run_id"
    if body.get("site") != signer:
        return f"signed by {signer} but claims to audit {body.get('site')!r}; a site signs only its own audit"
    if body["site"] not in clients:
        return f"{body['site']} is not a client of this run"
    if body.get("verdict") not in SITE_VERDICTS or not isinstance(body.get("checks"), dict):
        return f"verdict {body.get('verdict')!r} is not one of {', '.join(SITE_VERDICTS)}, or it has no checks"
    fields = {"entries": int, "last_hash": str, "matches_server_copy": bool}
    if not isinstance(ledger, dict) or not all(isinstance(ledger.get(k), kind) for k, kind in fields.items()):
        return "its ledger summary lacks entries (int), last_hash (str) or matches_server_copy (bool)"
    return None


def _ledger_problems(path: Path, body: dict[str, Any], run_dir: Path) -> list[str]:
    """The site's ledger head against the server's copy of its ledger."""
    site, ledger = body["site"], body["ledger"]
    copy = ledger_path(run_dir, site)
    name = copy.relative_to(run_dir).as_posix()
    try:
        entries = load_entries(copy, client_id=site)
    except LedgerError as exc:
        return [f"{path}: {site}'s ledger head cannot be compared: the server's copy {name} does not load ({exc})"]
    head = entries[-1].hash if entries else ""
    problems = []
    if (len(entries), head) != (ledger["entries"], ledger["last_hash"]):
        problems.append(
            f"{path}: {site}'s own ledger has {ledger['entries']} entries ending {ledger['last_hash'][:16] or '-'}, "
            f"the server's copy {name} has {len(entries)} ending {head[:16] or '-'}; one of them was cut or rewritten"
        )
    if not ledger["matches_server_copy"]:
        problems.append(f"{path}: {site} reports that the server's copy of its ledger differs from its own")
    return problems


def require_site_audits(anchor: TrustAnchor, folder: Path) -> Registry:
    """The registry site audits are checked with.

    Raises:
        AuditError: no registry (a site audit is worth only the key it is checked with), or no folder.
    """
    if anchor.registry is None:
        raise AuditError("audit: --site-audits needs --registry: a site audit is worth only the key it is checked with")
    if not Path(folder).is_dir():
        raise AuditError(f"audit: --site-audits {folder} is not a folder; pass the folder the sites' audits are in")
    return anchor.registry


def run_site_audits_check(run_dir: Path, anchor: TrustAnchor, folder: Path) -> CheckResult:
    """Check every site audit under ``folder`` and save the result as ``audit/sites.json``.

    Raises:
        AuditError: no registry (site audits are checked only against pinned keys), or no folder.
    """
    registry = require_site_audits(anchor, folder)
    clients = run_config(run_dir).client_ids()
    audits = [
        check_site_audit(path, document, registry, run_dir, clients) for path, document in find_site_audits(folder)
    ]
    counted = {a.site: a for a in audits if a.other_run is None and a.verdict != "refused"}
    findings = [problem for a in audits for problem in a.problems]
    missing = [c for c in clients if c not in counted]
    unresolved = [s for s, a in counted.items() if a.verdict == "not resolvable"]
    verdict: Verdict = "fail" if findings else ("incomplete" if missing or unresolved else "pass")
    gaps = [f"{c}: no site audit of this run under {folder}" for c in missing]
    gaps += [f"{s}: its site audit could not resolve its result (not resolvable)" for s in unresolved]
    result = CheckResult(
        name="sites",
        title="Site audits: signed by the registered sites, of this run, ledger heads matching",
        verdict=verdict,
        summary=f"{len(counted)} of {len(clients)} clients handed a site audit of this run; "
        f"{len(findings)} problem(s), {len(missing)} missing, {len(unresolved)} not resolvable.",
        numbers={"site_audits_found": len(audits), "clients": len(clients), "missing": len(missing)},
        tables=[Table("Site audits found", ["file", "site", "verdict", "ledger entries", "note"], _rows(audits))],
        findings=findings + gaps if verdict == "fail" else gaps,
        details={
            **anchor.details(),
            "site_audits": str(folder),
            "site_checks": {site: a.checks for site, a in sorted(counted.items())},
        },
    )
    save_result(run_dir, result)
    return result


def _rows(audits: list[SiteAudit]) -> list[list[str]]:
    rows = []
    for a in audits:
        note = f"refused: of run {a.other_run}, not this one" if a.other_run else ("; ".join(a.problems) or "ok")
        rows.append([str(a.path), a.site, a.verdict, "-" if a.entries is None else str(a.entries), note])
    return rows


AT_THE_SITES = ("mia", "dp")
"""Checks that need a site's records and model: in a run with party folders they run at each site."""


def audited_at_the_sites(run_dir: Path) -> bool:
    """Whether the run's sites kept their records and models (``crosslm run/deploy --sites``)."""
    return RunStore(run_dir).parties() == PARTIES_SITES


def at_the_sites(run_dir: Path, sites: CheckResult | None) -> dict[str, CheckResult | str]:
    """The ``mia`` and ``dp`` rows of a run with party folders: each site ran them on its own model
    (``crosslm audit site``), so each row holds every accepted site audit's verdict for that check
    (a site without an accepted audit is ``missing``: incomplete). A refused or mismatching site
    audit fails the ``sites`` row, and so the overall verdict. Without site audits, the sentence
    saying what to hand in."""
    if sites is None:
        return {
            name: f"audit {name}: {run_dir} was run with party folders, so each site ran this check on its own "
            "model (`crosslm audit site`); pass --site-audits DIR with the sites' signed results"
            for name in AT_THE_SITES
        }
    clients = run_config(run_dir).client_ids()
    by_site: dict[str, dict[str, str]] = sites.details.get("site_checks", {})
    rows: dict[str, CheckResult | str] = {}
    for name in AT_THE_SITES:
        verdicts = {site: by_site.get(site, {}).get(name, "missing") for site in clients}
        if "fail" in verdicts.values():
            verdict: Verdict = "fail"
        else:
            verdict = "pass" if set(verdicts.values()) == {"pass"} else "incomplete"
        shown = ", ".join(f"{site} {v}" for site, v in verdicts.items())
        result = CheckResult(
            name=name,
            title=f"{name.upper()} at the sites: each site's own model, on its own records",
            verdict=verdict,
            summary=f"Run by each site on its own model and records (crosslm audit site): {shown}.",
            findings=[f"{site}: its {name} check is {v}" for site, v in verdicts.items() if v != "pass"],
            details={**sites.details, "at_the_sites": True},
        )
        save_result(run_dir, result)
        rows[name] = result
    return rows
