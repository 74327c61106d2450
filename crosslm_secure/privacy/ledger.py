"""A client's privacy ledger: every privacy-relevant release, append-only and hash-chained.

File: ``runs/<id>/clients/<client_id>/ledger.jsonl`` with its ``.head`` sidecar; the entry
format, hash chain and signatures are in :mod:`crosslm_secure.privacy.ledger_format`.

Writes are atomic: the new file is written to a temporary, fsynced and renamed over the
old one, then the head is replaced the same way. A crash between the two renames leaves a
ledger one entry ahead of its head, whose chain still verifies; that state is accepted
and the head is rewritten on the next append.

Entries are idempotent per ``(run_id, round, mechanism, attempt)`` (``attempt`` only for
score releases of a re-aggregated round; 0 otherwise): recording the same release again
returns the stored entry and writes nothing; recording different parameters under the
same key is refused, and so is a file that repeats a key.

The hash chain detects accidental corruption and naive edits; the signatures make a
rewritten history detectable by anyone holding the site's enrolled public key (the audit):
without the site's private key no one can make an entry that verifies. Dropping entries from
the end and rewriting the head stays possible; the audit cross-checks the ledger against
the run's completed rounds and the signed epsilon claims in the transcript (SECURITY.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crosslm_secure.crypto.keys import ParticipantKeys
from crosslm_secure.privacy.accounting import ACCOUNTANTS, MechanismBlock, accountant_for
from crosslm_secure.privacy.ledger_format import (
    GENESIS_HASH,
    LEDGER_FILE,
    PARAMETER_FIELDS,
    SCHEMA,
    LedgerEntry,
    LedgerError,
    entry_hash,
    entry_line,
    load_entries,
    release_key,
    signed_message,
    verify_entry,
)
from crosslm_secure.privacy.settings import NoiseSource
from crosslm_secure.storage import atomic_write_text

__all__ = [
    "LEDGER_FILE",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "ledger_path",
    "load_entries",
    "signed_message",
    "verify_entry",
]
"""The ledger's public names; the entry type and the file reading are defined in ``ledger_format``."""


def ledger_path(run_dir: str | Path, client_id: str) -> Path:
    """Where a client's ledger lives inside a run folder."""
    return Path(run_dir) / "clients" / client_id / LEDGER_FILE


class Ledger:
    """A client's append-only privacy ledger, verified on open.

    Args:
        path: the ledger file (``.../ledger.jsonl``); created with its folder on first append.
        client_id: the client it belongs to; entries of another client are refused.
        clock: returns the entry time (ISO 8601); tests pass a fixed one.
        signer: the site's protocol identity; every new entry is signed with it (audits
            verify it against the site's enrolled public key). None writes unsigned entries,
            which only throw-away ledgers (audit retraining, tests) may do.

    Raises:
        LedgerError: the file is unreadable, truncated, tampered, or out of order.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        client_id: str,
        clock: Callable[[], str] | None = None,
        signer: ParticipantKeys | None = None,
    ) -> None:
        if signer is not None and signer.site != client_id:
            raise LedgerError(f"ledger: {client_id}'s ledger cannot be signed with {signer.site}'s keys")
        self.signer = signer
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.client_id = client_id
        self._clock = clock or _utc_now
        self._entries: list[LedgerEntry] = load_entries(self.path, client_id=client_id)

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, run_id: str, round_index: int, mechanism: str, attempt: int = 0) -> LedgerEntry | None:
        """The entry recorded for ``(run_id, round_index, mechanism, attempt)``, if any.

        ``attempt`` separates score releases of one round that was re-aggregated after a
        dropout (each attempt released a fresh noised vector); DP-SGD has attempt 0.
        """
        key = (run_id, round_index, mechanism, attempt)
        return next((entry for entry in self._entries if release_key(entry) == key), None)

    def history(self, unit: str = "record") -> list[MechanismBlock]:
        """Every private release of one privacy unit so far, as accounting blocks, in ledger order.

        Record-level (DP-SGD) and client-level (score releases) guarantees protect different
        units and are composed separately: the scores are post-processing of the DP model, so
        the record-level epsilon is the DP-SGD composition alone (SECURITY.md).
        """
        return [b for b in (e.block() for e in self._entries if e.unit == unit) if b is not None]

    @property
    def non_private(self) -> bool:
        """True when some training on private data was not DP (epsilon is then inf)."""
        return any(e.mechanism == "non-private" for e in self._entries)

    @property
    def delta(self) -> float | None:
        """The delta all private entries share (None before the first)."""
        deltas = {e.delta for e in self._entries if e.delta is not None}
        return next(iter(deltas)) if deltas else None

    def epsilon(
        self,
        accountant: str,
        delta: float | None = None,
        extra: Sequence[MechanismBlock] = (),
        unit: str = "record",
    ) -> float:
        """Cumulative epsilon of one privacy unit's releases plus ``extra`` planned blocks.

        Args:
            accountant: ``prv`` or ``rdp``.
            delta: defaults to the ledger's delta; required for an empty ledger with extra.
            extra: releases not yet recorded (e.g. the round about to run).
            unit: ``record`` (DP-SGD; what the budget governs) or ``client`` (score releases).
        """
        if unit == "record" and self.non_private:
            return math.inf
        delta = delta if delta is not None else self.delta
        history = self.history(unit) + list(extra)
        if not history:
            return 0.0
        if delta is None:
            raise LedgerError("ledger: a delta is needed to account an empty ledger's planned releases")
        return accountant_for(accountant).epsilon(history, delta)

    def record_dp_sgd(
        self,
        *,
        run_id: str,
        round_index: int,
        sample_rate: float,
        noise_multiplier: float,
        steps: int,
        max_grad_norm: float,
        delta: float,
        accountant: str,
        epsilon_max: float,
        noise_source: NoiseSource = "os",
        details: dict[str, Any] | None = None,
    ) -> LedgerEntry:
        """Record one round of DP-SGD on private records (record-level, Poisson-subsampled).

        ``noise_source`` (``privacy.noise_source``) is kept in the entry's details: ``seeded``
        marks a release whose noise anyone with the config can replay.
        """
        return self._append(
            run_id=run_id,
            round=round_index,
            mechanism="dp-sgd",
            unit="record",
            sample_rate=float(sample_rate),
            noise_multiplier=float(noise_multiplier),
            steps=int(steps),
            max_grad_norm=float(max_grad_norm),
            noise_std=float(noise_multiplier * max_grad_norm),
            sensitivity=float(max_grad_norm),
            delta=float(delta),
            accountant=accountant,
            epsilon_max=float(epsilon_max),
            details={**(details or {}), "noise_source": noise_source},
        )

    def record_score_release(
        self,
        *,
        run_id: str,
        round_index: int,
        noise_std: float,
        sensitivity: float,
        count: int,
        delta: float,
        accountant: str,
        epsilon_max: float,
        attempt: int = 0,
        noise_source: NoiseSource = "os",
        details: dict[str, Any] | None = None,
    ) -> LedgerEntry:
        """Record ``count`` Gaussian releases of a client's score vector.

        Args:
            noise_std: std of the Gaussian noise this client's release is protected by
                (its effective share of the aggregate noise).
            sensitivity: L2 sensitivity of the released vector to replacing this client's
                whole data (client level, hence also record level).
            count: how many such releases this entry covers (usually 1 per round).
            attempt: the aggregation attempt within the round (a retry is another release).
            noise_source: where the noise came from (``privacy.noise_source``), as for DP-SGD.
        """
        if not (noise_std > 0 and sensitivity > 0):
            raise LedgerError(
                f"ledger: a score release needs noise_std > 0 and sensitivity > 0 (got {noise_std}, {sensitivity})"
            )
        return self._append(
            run_id=run_id,
            round=round_index,
            mechanism="gaussian-score-release",
            unit="client",
            sample_rate=1.0,
            noise_multiplier=float(noise_std / sensitivity),
            steps=int(count),
            max_grad_norm=None,
            noise_std=float(noise_std),
            sensitivity=float(sensitivity),
            delta=float(delta),
            accountant=accountant,
            epsilon_max=float(epsilon_max),
            details={**(details or {}), "attempt": attempt, "noise_source": noise_source},
        )

    def record_non_private(
        self,
        *,
        run_id: str,
        round_index: int,
        steps: int,
        accountant: str,
        epsilon_max: float,
        details: dict[str, Any] | None = None,
    ) -> LedgerEntry:
        """Record training on private records without DP: from here on epsilon = inf."""
        return self._append(
            run_id=run_id,
            round=round_index,
            mechanism="non-private",
            unit="record",
            sample_rate=None,
            noise_multiplier=None,
            steps=int(steps),
            max_grad_norm=None,
            noise_std=None,
            sensitivity=None,
            delta=None,
            accountant=accountant,
            epsilon_max=float(epsilon_max),
            details=details or {},
        )

    def _append(self, **draft: Any) -> LedgerEntry:
        if draft["accountant"] not in ACCOUNTANTS:
            raise LedgerError(f"ledger: unknown accountant {draft['accountant']!r}; use one of {ACCOUNTANTS}")
        existing = self.find(draft["run_id"], draft["round"], draft["mechanism"], draft["details"].get("attempt", 0))
        if existing is not None:
            mismatched = [k for k in PARAMETER_FIELDS if getattr(existing, k) != draft[k]]
            if mismatched:
                raise LedgerError(
                    f"ledger: {draft['mechanism']} of run {draft['run_id']} round {draft['round']} "
                    f"is already recorded with different {', '.join(mismatched)}; a round is "
                    "recorded once"
                )
            return existing
        if draft["delta"] is not None and self.delta is not None and draft["delta"] != self.delta:
            raise LedgerError(
                f"ledger: delta {draft['delta']:g} differs from the ledger's {self.delta:g}; "
                "all releases of a client are composed at one delta"
            )
        block = (
            None
            if draft["mechanism"] == "non-private"
            else MechanismBlock(draft["noise_multiplier"], draft["sample_rate"], draft["steps"])
        )
        if block is None or (draft["unit"] == "record" and self.non_private):
            epsilon = {name: math.inf for name in ACCOUNTANTS}
        else:
            history = self.history(draft["unit"]) + [block]
            epsilon = {name: _epsilon_or_inf(name, history, draft["delta"], draft["unit"]) for name in ACCOUNTANTS}
        prev_hash = self._entries[-1].hash if self._entries else GENESIS_HASH
        body = dict(
            draft,
            seq=len(self._entries),
            client_id=self.client_id,
            epsilon=epsilon,
            time=self._clock(),
            prev_hash=prev_hash,
            schema=SCHEMA,
        )
        digest = entry_hash(body)
        signature = self.signer.sign(signed_message(self.client_id, digest)).hex() if self.signer else ""
        entry = LedgerEntry(hash=digest, signature=signature, **body)
        lines = [entry_line(e) for e in self._entries] + [entry_line(entry)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, "".join(lines))
        atomic_write_text(self.head_path, json.dumps({"entries": len(lines), "hash": entry.hash}) + "\n")
        self._entries.append(entry)
        return entry


def _epsilon_or_inf(accountant: str, history: list[MechanismBlock], delta: float, unit: str) -> float:
    """Epsilon of a history; inf where the accountant cannot evaluate it.

    Client-level score releases run at noise-flooding levels (noise multipliers ~1e-2):
    Opacus's PRV accountant then needs minutes and gigabytes to discretize them (measured:
    12 GB and 140 s in one round), or fails. Their epsilon is astronomically large anyway,
    so they are accounted with RDP only and PRV records the honest bound, inf.
    """
    if unit == "client" and accountant == "prv":
        return math.inf
    try:
        return accountant_for(accountant).epsilon(history, delta)
    except (RuntimeError, ValueError, OverflowError):
        return math.inf


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
