"""The reviewer's trust anchor: a registry of public keys pinned out of band (``--registry FILE``).

With a registry, every signature the audits accept (ledger entries, the transcript's epsilon
claims, the coordinator's seal, site audits) is checked against the registry's keys, and every
identity ``run.json`` records must be the registry's entry of that site. Without one, the keys
come from ``run.json`` itself: they are self-attested by the run folder, and whoever can write
the folder can re-key it and re-sign what it holds. A check that passes that way is reported
as SELF-ATTESTED, never as a plain PASS.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crosslm_secure.audit.base import AuditError, CheckResult
from crosslm_secure.config import Config
from crosslm_secure.crypto.keys import PublicIdentity, Registry
from crosslm_secure.errors import CryptoError
from crosslm_secure.report.run_ledgers import enrolled_identities
from crosslm_secure.runstore import RUN_FILE, RunStore

PINNED = "pinned"
SELF_ATTESTED = "self-attested"
TRUSTING_CHECKS = ("protocol", "ledger")
"""Checks whose signatures are checked against the trust anchor (``--registry``)."""
SELF_ATTESTED_SENTENCE = (
    "identities are self-attested by the run folder: run.json names the keys every signature is checked "
    "against, and whoever can write the folder can re-key it and re-sign its ledgers and seal; pass "
    "--registry FILE (the public keys whose fingerprints you compared out of band) to pin them"
)


@dataclass(frozen=True)
class TrustAnchor:
    """The keys the audit trusts: a pinned registry, or (``registry`` None) the run folder's own."""

    registry: Registry | None = None
    source: str = ""
    digest: str = ""

    @classmethod
    def load(cls, path: Path | None) -> TrustAnchor:
        """The registry at ``path``; no path gives the self-attested anchor.

        Raises:
            AuditError: the file is missing or not a crosslm registry.
        """
        if path is None:
            return cls()
        try:
            registry = Registry.load(path)
        except CryptoError as exc:
            raise AuditError(f"audit: --registry {path}: {exc}") from None
        return cls(registry, str(path), hashlib.sha256(Path(path).read_bytes()).hexdigest())

    @property
    def pinned(self) -> bool:
        return self.registry is not None

    def identities(self, store: RunStore) -> dict[str, list[PublicIdentity]]:
        """Site -> the keys its signatures are checked against: the registry's, else ``run.json``'s.

        Raises:
            LedgerError: without a registry, a key recorded in ``run.json`` is damaged.
        """
        if self.registry is None:
            return enrolled_identities(store)
        return {identity.site: [identity] for identity in self.registry}

    def require_parties(self, store: RunStore, config: Config) -> None:
        """Refuse a registry that lacks a party of the run (a client of the config, or a site of ``run.json``).

        Raises:
            AuditError: one sentence naming the registry file, the missing parties and the fix.
        """
        if self.registry is None:
            return
        parties = set(config.client_ids()) | set(store.enrolled_keys())
        missing = sorted(party for party in parties if party not in self.registry)
        if missing:
            raise AuditError(
                f"audit: registry {self.source} has no key for {', '.join(missing)}, a party of run "
                f"{store.run_id}; enrol each party's identity.json with `crosslm keys enroll` (fingerprint "
                "compared out of band) and audit again"
            )

    def details(self) -> dict[str, Any]:
        """What a check result keeps about the anchor it was checked against."""
        if self.registry is None:
            return {"identities": SELF_ATTESTED, "trust_anchor": SELF_ATTESTED_SENTENCE}
        return {
            "identities": PINNED,
            "trust_anchor": f"registry {self.source} (sha256 {self.digest}), {len(self.registry)} identities",
        }


def is_self_attested(result: CheckResult) -> bool:
    """Whether a check's result rests on keys the run folder names itself: a check of signatures
    that did not record a pinned registry (results saved before registries count as unpinned)."""
    return result.name in TRUSTING_CHECKS and result.details.get("identities") != PINNED


def identity_findings(store: RunStore, anchor: TrustAnchor) -> list[str]:
    """Every identity ``run.json`` records against the pinned registry (empty without one)."""
    registry = anchor.registry
    if registry is None:
        return []
    findings = []
    for site, raws in sorted(store.enrolled_keys().items()):
        for raw in raws:
            try:
                recorded = PublicIdentity.from_dict(raw)
            except CryptoError as exc:
                findings.append(f"{RUN_FILE}: the recorded key of {site} is damaged ({exc})")
                continue
            if site not in registry:
                findings.append(f"{RUN_FILE}: enrols {site}, who is not in the registry {anchor.source}")
            elif recorded != registry.get(site):
                findings.append(
                    f"{RUN_FILE}: records a key for {site} (fingerprint {recorded.fingerprint[:19]}...) that is "
                    f"not the registry's ({registry.get(site).fingerprint[:19]}...); the run folder was re-keyed, "
                    "or the run used keys other than the ones you pinned"
                )
    return findings
