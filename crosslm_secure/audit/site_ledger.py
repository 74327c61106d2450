"""Does the server's copy of a site's ledger hold exactly the entries the site wrote?

The site's ledger (in its state) is authoritative: it is verified (hash chain, entry keys) as
it is opened, and a site whose own ledger does not verify cannot vouch for anything. The
server's copy is compared entry by entry as it stands; the first entry that differs is named
by its position, round and mechanism (and the fields that differ), never by a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crosslm_secure.audit.base import AuditError
from crosslm_secure.errors import CrossLMError
from crosslm_secure.privacy.ledger import Ledger
from crosslm_secure.storage import read_jsonl


@dataclass(frozen=True)
class LedgerComparison:
    """The site's ledger against the server's copy."""

    entries: int
    """Entries in the site's ledger."""
    last_hash: str
    """``hash`` of the site's last entry; "" when it has none."""
    server_entries: int
    difference: str
    """The first difference, one sentence; "" when the copies match."""

    @property
    def matches(self) -> bool:
        return not self.difference


def compare_ledgers(site_ledger: Path, server_copy: Path, site: str) -> LedgerComparison:
    """Compare the site's own ledger with the server's copy of it.

    Raises:
        AuditError: the site's own ledger is missing or does not verify.
    """
    if not site_ledger.is_file():
        raise AuditError(
            f"audit site: the site's ledger {site_ledger} is missing; restore the site's state for this run"
        )
    try:
        Ledger(site_ledger, client_id=site)
    except CrossLMError as exc:
        raise AuditError(
            f"audit site: the site's ledger {site_ledger} does not verify ({exc}); restore it from the site's backup"
        ) from None
    own = read_jsonl(site_ledger)
    last_hash = str(own[-1]["hash"]) if own else ""
    if not server_copy.is_file():
        return LedgerComparison(len(own), last_hash, 0, f"the server holds no copy of {site}'s ledger at {server_copy}")
    try:
        copy = read_jsonl(server_copy)
    except ValueError:
        copy = None
    if copy is None or not all(isinstance(entry, dict) for entry in copy):
        return LedgerComparison(len(own), last_hash, 0, f"the server's copy {server_copy} is not JSON lines of entries")
    return LedgerComparison(len(own), last_hash, len(copy), first_difference(own, copy, server_copy))


def first_difference(own: list[dict[str, Any]], copy: list[dict[str, Any]], server_copy: Path) -> str:
    """The first entry where the server's copy differs from the site's ledger, as a sentence ("" if none)."""
    for index in range(max(len(own), len(copy))):
        mine, theirs = own[index] if index < len(own) else {}, copy[index] if index < len(copy) else {}
        if index >= len(copy):
            return f"{_entry(index, mine)} is missing from the server's copy {server_copy}"
        if index >= len(own):
            return f"the server's copy {server_copy} has an entry {index} ({_what(theirs)}) the site never wrote"
        if mine != theirs:
            fields = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            return f"{_entry(index, mine)} differs in the server's copy {server_copy} ({', '.join(fields)})"
    return ""


def _entry(index: int, entry: dict[str, Any]) -> str:
    return f"entry {index} ({_what(entry)})"


def _what(entry: dict[str, Any]) -> str:
    return f"round {entry.get('round')}, {entry.get('mechanism')}"
