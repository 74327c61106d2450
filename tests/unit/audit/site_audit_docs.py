"""Signed site-audit documents for tests: the format ``crosslm audit site`` writes, with real keys
and real signatures (audit/site_audits.py documents the body)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crosslm_secure.crypto.keys import ParticipantKeys
from crosslm_secure.crypto.signed import sign_document
from crosslm_secure.privacy.ledger import ledger_path, load_entries
from crosslm_secure.runstore import RunStore


def site_audit(
    keys: ParticipantKeys, run_dir: Path, *, verdict: str = "pass", site: str | None = None, **body: Any
) -> dict[str, Any]:
    """A site audit signed by ``keys``, carrying the head of the site's ledger as ``run_dir`` holds it.

    ``site`` (default: the signer) and any body field (``run_id``, ``ledger``, ...) can be overridden.
    """
    site = site or keys.site
    entries = load_entries(ledger_path(run_dir, site), client_id=site)
    content = {
        "schema": "crosslm-site-audit/1",
        "run_id": RunStore(run_dir).run_id,
        "site": site,
        "verdict": verdict,
        "ledger": {
            "entries": len(entries),
            "last_hash": entries[-1].hash if entries else "",
            "matches_server_copy": True,
        },
        "checks": {"mia": {"verdict": verdict, "summary": f"membership inference at the site: {verdict}"}},
        "model_sha256": "0" * 64,
        "created": "2026-12-06T04:00:00+00:00",
        **body,
    }
    return sign_document(keys, "site-audit", content)


def hand_in(folder: Path, documents: dict[str, dict[str, Any]]) -> Path:
    """Write each document as ``folder/<site folder>/audit/<run-id>.json``, as the party layout keeps them."""
    for name, document in documents.items():
        path = folder / name / "audit" / f"{document['body']['run_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2))
    return folder
