"""The coordinator's copy of a site's ledger, built from the entries the site sends.

A site that keeps its state on its own machine holds the authoritative ledger; with every
evaluation it sends the entries the coordinator does not hold yet (``EvaluateReply.ledger``).
The coordinator appends them to ``runs/<id>/clients/<site>/ledger.jsonl`` only once the chain
continues its copy and every new entry carries the site's enrolled signature, so the copy
can be compared, entry by entry, with the site's own at the site's audit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from crosslm_secure.crypto.keys import PublicIdentity
from crosslm_secure.privacy.ledger_format import (
    LedgerError,
    entry_line,
    load_entries,
    parse_ledger_text,
    verify_entry,
)
from crosslm_secure.storage import atomic_write_text


def held_entries(path: Path, client_id: str) -> int:
    """How many entries the copy at ``path`` holds (0 before the first)."""
    return len(load_entries(path, client_id=client_id))


def extend_copy(path: Path, client_id: str, lines: Sequence[str], identity: PublicIdentity) -> int:
    """Append a site's new entries to the copy at ``path``; return how many entries it then holds.

    Raises:
        LedgerError: the entries do not continue the copy's chain, or one is not signed by
            ``identity``; the copy is left as it was.
    """
    path = Path(path)
    held = load_entries(path, client_id=client_id)
    if not lines:
        return len(held)
    text = "".join(entry_line(entry) for entry in held) + "".join(
        line if line.endswith("\n") else line + "\n" for line in lines
    )
    entries = parse_ledger_text(text, path, client_id=client_id)
    for entry in entries[len(held) :]:
        reason = verify_entry(entry, [identity])
        if reason is not None:
            raise LedgerError(
                f"ledger: {client_id} sent entry {entry.seq} that {reason}; the copy keeps its {len(held)} entries"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    atomic_write_text(
        path.with_name(path.name + ".head"), json.dumps({"entries": len(entries), "hash": entries[-1].hash}) + "\n"
    )
    return len(entries)
