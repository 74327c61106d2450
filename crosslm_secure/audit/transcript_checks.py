"""Checks on the server's transcript (protocols/wire-protocol.md, "The server's transcript").

A row may hold only the documented fields (type, size, hash, envelope routing); every
incoming message the server used must have been ``accepted`` (signature verified, sequence
fresh), and no ``(sender, seq)`` or message hash may be accepted twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRANSCRIPT = "transcript.jsonl"
TRANSCRIPT_FIELDS: dict[str, tuple[type, ...]] = {
    "direction": (str,),
    "peer": (str,),
    "round": (int,),
    "bytes": (int,),
    "sha256": (str,),
    "type": (str,),
    "status": (str,),
    "sender": (str, type(None)),
    "recipient": (str, type(None)),
    "seq": (int, type(None)),
    "claim": (dict,),
}
_ROUTING_FIELDS = ("status", "sender", "recipient", "seq")
_OPTIONAL_FIELDS = (*_ROUTING_FIELDS, "claim")
CLAIM_FIELDS: dict[str, tuple[type, ...]] = {
    "ledger_seq": (int,),
    "ledger_hash": (str,),
    "epsilon": (int, float, type(None)),
    "signature": (str,),
}
"""An accepted train.reply's signed epsilon claim (protocol/messages.py ``EpsilonClaim``)."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MESSAGE_TYPE = re.compile(r"^[a-z][a-z.]{0,40}$")


@dataclass
class SubCheck:
    name: str
    evidence: str = ""
    findings: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "pass" if not self.findings else "fail"


def transcript_row_problems(row: Any) -> list[str]:
    """Why one transcript row is more than type, size, hash and routing (empty when it is not)."""
    if not isinstance(row, dict):
        return [f"is a {type(row).__name__}, not a row of the documented fields"]
    problems = [
        f"has field {key!r}, outside the documented transcript fields" for key in row if key not in TRANSCRIPT_FIELDS
    ]
    for key, kinds in TRANSCRIPT_FIELDS.items():
        if key not in row:
            if key not in _OPTIONAL_FIELDS:
                problems.append(f"lacks field {key!r}")
            continue
        value = row[key]
        if not isinstance(value, kinds) or isinstance(value, bool):
            problems.append(f"field {key!r} is a {type(value).__name__}, not {'/'.join(k.__name__ for k in kinds)}")
    if isinstance(row.get("sha256"), str) and not _SHA256.match(row["sha256"]):
        problems.append("field 'sha256' is not a sha256 hex digest")
    if isinstance(row.get("type"), str) and not _MESSAGE_TYPE.match(row["type"]):
        problems.append(f"field 'type' is {row['type'][:40]!r}, not a message type name")
    if row.get("direction") not in ("in", "out"):
        problems.append(f"field 'direction' is {row.get('direction')!r}, not in/out")
    if "status" in row and row["status"] not in ("sent", "accepted", "refused"):
        problems.append(f"field 'status' is {row['status']!r}, not sent/accepted/refused")
    if "claim" in row:
        problems += _claim_problems(row)
    return problems


def _claim_problems(row: dict[str, Any]) -> list[str]:
    claim = row["claim"]
    if row.get("type") != "train.reply" or row.get("status") != "accepted":
        return ["has a 'claim', which only an accepted train.reply keeps"]
    if not isinstance(claim, dict):
        return []
    problems = [
        f"claim has field {key!r}, outside the documented claim fields" for key in claim if key not in CLAIM_FIELDS
    ]
    for key, kinds in CLAIM_FIELDS.items():
        if key not in claim or not isinstance(claim[key], kinds) or isinstance(claim[key], bool):
            problems.append(f"claim field {key!r} is missing or not {'/'.join(k.__name__ for k in kinds)}")
    if isinstance(claim.get("ledger_hash"), str) and not _SHA256.match(claim["ledger_hash"]):
        problems.append("claim field 'ledger_hash' is not a sha256 hex digest")
    if isinstance(claim.get("signature"), str) and not re.fullmatch(r"[0-9a-f]{128}", claim["signature"]):
        problems.append("claim field 'signature' is not an Ed25519 signature in hex")
    return problems


def read_jsonl_rows(path: Path, check: SubCheck | None = None) -> list[Any]:
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if check is not None:
                check.findings.append(f"{path.name} line {number}: not valid JSON; it cannot be audited")
    return rows


# -- 5. signed and accepted once -----------------------------------------------------------


def check_signed_once(run_dir: Path) -> tuple[SubCheck, dict[str, int]]:
    check = SubCheck("every message signed, accepted once")
    # Malformed rows are findings of the scores sub-check; here only well-formed rows count.
    everything = enumerate(read_jsonl_rows(run_dir / TRANSCRIPT), 1)
    numbered = [(n, r) for n, r in everything if not transcript_row_problems(r)]
    rows = [r for _, r in numbered]
    counts = {
        "messages_total": len(rows),
        "messages_out": sum(r["direction"] == "out" for r in rows),
        "messages_in_accepted": 0,
        "messages_in_refused": 0,
    }
    legacy = [n for n, r in numbered if any(k not in r for k in _ROUTING_FIELDS)]
    if legacy:
        check.findings.append(
            f"{TRANSCRIPT}: {len(legacy)} of {len(rows)} rows (first: line {legacy[0]}) lack status/sender/"
            "recipient/seq (written before transcript routing fields); signing and single acceptance "
            "cannot be shown from this run"
        )
        _duplicate_hashes(numbered, check)
        check.evidence = "legacy transcript: only message hashes can be compared"
        return check, counts
    server_names = {r["sender"] for r in rows if r["direction"] == "out"}
    if len(server_names) > 1:
        check.findings.append(f"{TRANSCRIPT}: outgoing messages name several senders {sorted(map(str, server_names))}")
    server = next(iter(server_names), None)
    _check_routing(numbered, server, counts, check)
    _duplicate_hashes(numbered, check)
    check.evidence = (
        f"{counts['messages_out']} sent by {server}, {counts['messages_in_accepted']} accepted after signature "
        f"and replay checks, {counts['messages_in_refused']} refused; (sender, seq) and sha256 unique, seq increasing"
    )
    return check, counts


def _check_routing(
    numbered: list[tuple[int, dict[str, Any]]], server: str | None, counts: dict[str, int], check: SubCheck
) -> None:
    """Each row: outgoing sealed to its peer, incoming accepted from its peer, (sender, seq) fresh; counts them."""
    last_seq: dict[str, int] = {}
    accepted_keys: dict[tuple[str, int], int] = {}
    for number, row in numbered:
        where = f"{TRANSCRIPT} line {number}"
        if row["direction"] == "out":
            if row["status"] != "sent" or row["recipient"] != row["peer"] or row["seq"] is None:
                check.findings.append(f"{where}: outgoing {row['type']} is not a sealed message to {row['peer']}")
                continue
        elif row["status"] == "refused":
            counts["messages_in_refused"] += 1
            continue
        elif row["status"] != "accepted":
            check.findings.append(f"{where}: incoming {row['type']} has status {row['status']!r}")
            continue
        else:
            counts["messages_in_accepted"] += 1
            if row["sender"] != row["peer"] or (server is not None and row["recipient"] != server):
                check.findings.append(
                    f"{where}: accepted {row['type']} from {row['sender']} to {row['recipient']}, "
                    f"but the server asked {row['peer']}"
                )
        sender, seq = row["sender"], row["seq"]
        if sender is None or seq is None:
            check.findings.append(f"{where}: {row['type']} has no parseable envelope header; it was not signed")
            continue
        if (sender, seq) in accepted_keys:
            check.findings.append(
                f"{where}: {row['type']} from {sender} reuses seq {seq} of line {accepted_keys[(sender, seq)]} "
                "(accepted twice: a replay)"
            )
        elif seq <= last_seq.get(sender, -1):
            check.findings.append(
                f"{where}: {row['type']} from {sender} has seq {seq}, not above the last {last_seq[sender]}"
            )
        accepted_keys.setdefault((sender, seq), number)
        last_seq[sender] = max(seq, last_seq.get(sender, -1))


def _duplicate_hashes(numbered: list[tuple[int, dict[str, Any]]], check: SubCheck) -> None:
    seen: dict[str, int] = {}
    for number, row in numbered:
        if row.get("status", "accepted") == "refused" or row.get("type") == "refused":
            continue
        digest = row.get("sha256")
        if digest in seen:
            check.findings.append(
                f"{TRANSCRIPT} line {number}: message {str(digest)[:16]}... was already logged at line {seen[digest]} "
                "(the same signed bytes used twice)"
            )
        elif isinstance(digest, str):
            seen[digest] = number
