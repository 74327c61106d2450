"""``crosslm audit site``: a site audits its own model on its own records and signs the result.

Run on the site's machine against its folder ``DIR/<site>/`` and the coordinator's run folder.
It attacks the site's SLM checkpoint (LOSS, RMIA, LiRA: its training records against its
held-out ones), re-runs its DP-SGD with canaries (the one-run DP audit), and checks that the
server's copy of its ledger holds exactly the entries the site wrote. Only the signed result
leaves the site: ``DIR/<site>/audit/<run-id>.json``, a ``site-audit`` document signed with the
site's key (:mod:`crosslm_secure.crypto.signed`) whose body is::

    {"schema": "crosslm-site-audit/1", "run_id": str, "site": str,
     "verdict": "pass" | "fail" | "not resolvable",
     "ledger": {"entries": int, "last_hash": str, "matches_server_copy": bool},
     "checks": {"ledger" | "mia" | "dp": {"verdict": str, "summary": str, ...numbers}},
     "model_sha256": str, "created": ISO 8601 str}

``last_hash`` is the ``hash`` of the site's last ledger entry ("" if none). ``model_sha256``
is :func:`model_sha256` of the checkpoint. No record, nor any text of one, is in the body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crosslm_secure.audit.base import AuditError
from crosslm_secure.audit.site_checks import SiteVerdict, combined_verdict, dp_check, ledger_check, mia_check
from crosslm_secure.audit.site_ledger import LedgerComparison, compare_ledgers
from crosslm_secure.audit.site_run import SiteRun, open_site_run
from crosslm_secure.crypto.signed import sign_document
from crosslm_secure.manifest import sha256_file
from crosslm_secure.storage import atomic_write_json

SCHEMA = "crosslm-site-audit/1"
DOCUMENT_KIND = "site-audit"
"""The ``kind`` of the signed document (a reviewer accepts no other kind as a site audit)."""


@dataclass(frozen=True)
class SiteAudit:
    """A written site audit: where it is, and the body that was signed."""

    path: Path
    body: dict[str, Any]

    @property
    def verdict(self) -> SiteVerdict:
        return self.body["verdict"]


def run_site_audit(site_dir: Path, run_dir: Path, overrides: Sequence[str] = (), *, progress: bool = True) -> SiteAudit:
    """Audit one site of a run on the site's own records and state; write its signed result.

    Args:
        site_dir: the site's folder ``DIR/<site>`` (keys, records, ``state/<run-id>/``).
        run_dir: the coordinator's run folder (its config and the server's copies of the ledgers).
        overrides: ``audit.field=value`` settings.
        progress: show progress bars.

    Raises:
        AuditError: bad input (keys, records, state, run); nothing is written then.
    """
    site = open_site_run(Path(site_dir), Path(run_dir), overrides)
    comparison = compare_ledgers(site.ledger, site.server_ledger, site.site)
    model = model_sha256(site.checkpoint)
    checks = {
        "ledger": ledger_check(comparison, site.site),
        "mia": mia_check(site.audit, site.site, progress=progress),
        "dp": dp_check(site.audit, site.site, progress=progress),
    }
    body = site_audit_body(site, comparison, checks, model)
    path = site.party.audit_file(site.run_id)
    atomic_write_json(path, sign_document(site.keys, DOCUMENT_KIND, body))
    return SiteAudit(path, body)


def site_audit_body(
    site: SiteRun, comparison: LedgerComparison, checks: dict[str, dict[str, Any]], model: str
) -> dict[str, Any]:
    """The body the site signs (the schema in this module's docstring)."""
    return {
        "schema": SCHEMA,
        "run_id": site.run_id,
        "site": site.site,
        "verdict": combined_verdict([check["verdict"] for check in checks.values()]),
        "ledger": {
            "entries": comparison.entries,
            "last_hash": comparison.last_hash,
            "matches_server_copy": comparison.matches,
        },
        "checks": checks,
        "model_sha256": model,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def model_sha256(checkpoint: Path) -> str:
    """sha256 over a checkpoint folder's files, in order of their relative POSIX paths: for each
    file its relative path (UTF-8), a NUL byte, then the 32-byte sha256 digest of its contents.

    Raises:
        AuditError: the checkpoint folder is missing or holds no file.
    """
    files = sorted(
        (p for p in Path(checkpoint).rglob("*") if p.is_file()), key=lambda p: p.relative_to(checkpoint).as_posix()
    )
    if not files:
        raise AuditError(
            f"audit site: the SLM checkpoint {checkpoint} is missing or empty; restore the site's state for this run"
        )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(checkpoint).as_posix().encode("utf-8") + b"\0")
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()
