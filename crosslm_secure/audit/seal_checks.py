"""The coordinator's seal (crosslm_secure/seal.py) checked by the protocol audit.

``seal.json`` must be a ``run-seal`` document of this run, signed by the coordinator's key (the
pinned registry's, or without one ``run.json``'s: self-attested), and every file it seals must
still have the sealed sha256; a sealed kind of file that the seal does not list was written
after it. ``manifest.json`` is checked against the files by the allowlist sub-check, so the
manifest's hashes of sealed files are covered too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crosslm_secure.audit.transcript_checks import SubCheck
from crosslm_secure.audit.trust import TrustAnchor, identity_findings
from crosslm_secure.crypto.keys import PublicIdentity, Registry
from crosslm_secure.crypto.signed import verify_document
from crosslm_secure.errors import CryptoError
from crosslm_secure.manifest import sha256_file
from crosslm_secure.runstore import RunStore
from crosslm_secure.seal import SEAL_FILE, SEAL_KIND, sealed_paths


def check_seal(run_dir: Path, anchor: TrustAnchor) -> SubCheck:
    """The seal verifies as the coordinator's, is of this run, and every sealed hash matches."""
    check = SubCheck("run folder sealed by its coordinator, keys pinned")
    store = RunStore(run_dir)
    check.findings += identity_findings(store, anchor)
    body = _verified_body(run_dir, store, anchor, check)
    if body is None:
        check.evidence = f"{SEAL_FILE} does not verify (see findings)"
        return check
    files = body.get("files") if isinstance(body.get("files"), dict) else {}
    check.findings += sealed_file_findings(run_dir, files)
    keys = "the pinned registry's key" if anchor.pinned else "the key run.json names (self-attested)"
    check.evidence = f"{SEAL_FILE}: {len(files)} files sealed by {body.get('signer', 'server')} with {keys}"
    return check


def _verified_body(run_dir: Path, store: RunStore, anchor: TrustAnchor, check: SubCheck) -> dict[str, Any] | None:
    path = Path(run_dir) / SEAL_FILE
    if not path.is_file():
        check.findings.append(
            f"{SEAL_FILE}: missing; state, transcript and manifest are not signed by the coordinator, so anyone "
            "who can write the folder can edit them; re-run with a crosslm that seals its runs"
        )
        return None
    try:
        document = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        check.findings.append(f"{SEAL_FILE}: not JSON; the coordinator's seal was damaged")
        return None
    registry = anchor.registry if anchor.registry is not None else _coordinator_of(store)
    try:
        body = verify_document(document, SEAL_KIND, registry, where=SEAL_FILE)
    except CryptoError as exc:
        check.findings.append(str(exc))
        return None
    signer = registry.get(str(document["signer"]))
    if signer.role != "server":
        check.findings.append(f"{SEAL_FILE}: signed by {signer.site}, a {signer.role}, not the coordinator")
    if body.get("run_id") != store.run_id:
        check.findings.append(f"{SEAL_FILE}: seals run {body.get('run_id')!r}, not this run ({store.run_id!r})")
    return {**body, "signer": signer.site}


def _coordinator_of(store: RunStore) -> Registry:
    """Without a pinned registry: the server keys ``run.json`` names last (self-attested)."""
    latest: dict[str, PublicIdentity] = {}
    for site, raws in store.enrolled_keys().items():
        try:
            latest[site] = PublicIdentity.from_dict(raws[-1])
        except CryptoError:
            continue  # a damaged entry is a finding of the ledger audit; the seal then names its signer unknown
    return Registry(identity for identity in latest.values() if identity.role == "server")


def sealed_file_findings(run_dir: Path, files: dict[str, Any]) -> list[str]:
    """Each sealed file against its sealed sha256, and sealed kinds of files the seal does not list."""
    run_dir = Path(run_dir)
    findings = []
    for relative, sealed in sorted(files.items()):
        path = run_dir / relative
        if not path.is_file():
            findings.append(f"{relative}: sealed by the coordinator but missing")
        elif sha256_file(path) != sealed:
            findings.append(
                f"{relative}: changed after the coordinator sealed the run (sha256 {sha256_file(path)[:16]}..., "
                f"sealed {str(sealed)[:16]}...)"
            )
    for path in sealed_paths(run_dir):
        relative = path.relative_to(run_dir).as_posix()
        if relative not in files:
            findings.append(f"{relative}: written after the coordinator sealed the run (not in {SEAL_FILE})")
    return findings
