"""A client's privacy ledger: every privacy-relevant release, append-only and hash-chained.

File format (``runs/<id>/clients/<client_id>/ledger.jsonl``): one JSON object per line,
keys sorted, schema ``crosslm-ledger/2``. Each entry carries ``prev_hash`` (the previous
entry's ``hash``; 64 zeros for the first), ``hash`` = SHA-256 of the entry's canonical
JSON without ``hash`` and ``signature``, and ``signature``: the client's Ed25519 signature
over ``frame_fields("crosslm-ledger-entry-v2", client_id, hash)`` (hex), made with the
site's protocol identity. Schema ``crosslm-ledger/1`` lines (before signing) still load,
unsigned; audits report them. A sidecar ``ledger.jsonl.head`` holds the entry count and the last
hash, so that dropping whole lines from the end is detected too.

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

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crosslm_secure.crypto.keys import ParticipantKeys, PublicIdentity, frame_fields
from crosslm_secure.errors import CryptoError, PrivacyError
from crosslm_secure.privacy.accounting import ACCOUNTANTS, MechanismBlock, accountant_for
from crosslm_secure.storage import atomic_write_text

SCHEMA = "crosslm-ledger/2"
LEGACY_SCHEMA = "crosslm-ledger/1"
"""Entries written before ledgers were signed: they load, without a signature."""
GENESIS_HASH = "0" * 64
LEDGER_FILE = "ledger.jsonl"

MECHANISMS: tuple[str, ...] = ("dp-sgd", "gaussian-score-release", "non-private")
_PARAMETER_FIELDS = (
    "unit",
    "sample_rate",
    "noise_multiplier",
    "steps",
    "max_grad_norm",
    "noise_std",
    "sensitivity",
    "delta",
)
"""Fields that define a release; a repeated record must match them exactly."""


class LedgerError(PrivacyError):
    """A ledger is tampered, truncated, inconsistent, or a record conflicts with it."""


def ledger_path(run_dir: str | Path, client_id: str) -> Path:
    """Where a client's ledger lives inside a run folder."""
    return Path(run_dir) / "clients" / client_id / LEDGER_FILE


@dataclass(frozen=True)
class LedgerEntry:
    """One release. Unused fields are None (e.g. ``max_grad_norm`` of a score release).

    ``epsilon`` is the client's cumulative epsilon after this entry, per accountant, at
    ``delta``; ``accountant`` is the one its budget is checked with.
    """

    seq: int
    run_id: str
    client_id: str
    round: int
    mechanism: str
    unit: str
    """Privacy unit the mechanism protects: ``record`` (DP-SGD) or ``client`` (score release,
    which also protects every record of the client)."""
    sample_rate: float | None
    noise_multiplier: float | None
    steps: int
    """DP-SGD: Poisson draws (empty batches included); score release: number of releases."""
    max_grad_norm: float | None
    noise_std: float | None
    sensitivity: float | None
    delta: float | None
    epsilon: dict[str, float]
    accountant: str
    epsilon_max: float
    time: str
    prev_hash: str
    hash: str
    details: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA
    signature: str = ""
    """Hex Ed25519 signature of the client over :func:`signed_message`; empty when unsigned."""

    def block(self) -> MechanismBlock | None:
        """This entry as an accounting block; None for non-private training."""
        if self.mechanism == "non-private":
            return None
        return MechanismBlock(float(self.noise_multiplier), float(self.sample_rate), int(self.steps))

    def spent(self) -> float:
        """Cumulative epsilon after this entry with the budget's accountant."""
        return self.epsilon[self.accountant]


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
        return next((entry for entry in self._entries if _release_key(entry) == key), None)

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
        details: dict[str, Any] | None = None,
    ) -> LedgerEntry:
        """Record one round of DP-SGD on private records (record-level, Poisson-subsampled)."""
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
            details=details or {},
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
            details={**(details or {}), "attempt": attempt},
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
            mismatched = [k for k in _PARAMETER_FIELDS if getattr(existing, k) != draft[k]]
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
        digest = _entry_hash(body)
        signature = self.signer.sign(signed_message(self.client_id, digest)).hex() if self.signer else ""
        entry = LedgerEntry(hash=digest, signature=signature, **body)
        lines = [_entry_line(e) for e in self._entries] + [_entry_line(entry)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, "".join(lines))
        atomic_write_text(self.head_path, json.dumps({"entries": len(lines), "hash": entry.hash}) + "\n")
        self._entries.append(entry)
        return entry


def load_entries(path: str | Path, *, client_id: str | None = None, finished: bool = False) -> list[LedgerEntry]:
    """Read and verify a ledger file; a missing file is an empty ledger.

    Args:
        path: the ``ledger.jsonl`` file.
        client_id: when given, every entry must belong to this client.
        finished: the ledger of a finished run, read by an audit or a report: a missing or
            empty file, and a missing head, are refused (a live ledger tolerates them after a
            crash between its two renames).

    Raises:
        LedgerError: a line is not JSON, a field is missing or of the wrong type, the chain
            or a hash does not verify, a key repeats, or the head says entries are missing.
    """
    path = Path(path)
    head_path = path.with_name(path.name + ".head")
    if finished:
        if not path.is_file():
            raise LedgerError(f"ledger {path} is missing; this client's releases cannot be shown")
        if not path.read_bytes().strip():
            raise LedgerError(f"ledger {path} is empty; a finished run's ledger records its releases")
        if not head_path.is_file():
            raise LedgerError(f"ledger {path} has no head file {head_path.name}; it may have been truncated")
    if not path.exists():
        if head_path.exists():
            raise LedgerError(f"ledger {path} is missing but its head {head_path.name} exists; restore it")
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"ledger {path} cannot be read ({exc}); restore it from a backup") from None
    if text and not text.endswith("\n"):
        raise LedgerError(f"ledger {path} is truncated (its last line is incomplete); restore it")
    entries: list[LedgerEntry] = []
    seen: set[tuple[str, int, str, int]] = set()
    prev_hash = GENESIS_HASH
    for number, line in enumerate(text.splitlines(), start=1):
        entry = _parse_line(path, number, line)
        body = {k: v for k, v in asdict(entry).items() if k not in ("hash", "signature")}
        if _entry_hash(body) != entry.hash:
            raise LedgerError(f"ledger {path} line {number} was modified (its hash does not match)")
        if entry.prev_hash != prev_hash or entry.seq != number - 1:
            raise LedgerError(
                f"ledger {path} line {number} does not follow line {number - 1} "
                "(hash chain broken: an entry was removed, reordered or inserted)"
            )
        if client_id is not None and entry.client_id != client_id:
            raise LedgerError(f"ledger {path} line {number} belongs to {entry.client_id}, not {client_id}")
        key = _release_key(entry)
        if key in seen:
            raise LedgerError(f"ledger {path} line {number} repeats {key}; a round is recorded once")
        seen.add(key)
        entries.append(entry)
        prev_hash = entry.hash
    _check_head(path, head_path, entries)
    return entries


def _check_head(path: Path, head_path: Path, entries: list[LedgerEntry]) -> None:
    if not head_path.exists():
        if len(entries) > 1:
            raise LedgerError(f"ledger {path} has lost its head file {head_path.name}; restore it")
        return
    try:
        head = json.loads(head_path.read_text(encoding="utf-8"))
        count, last = int(head["entries"]), str(head["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        raise LedgerError(f"ledger head {head_path} is unreadable; restore it") from None
    if len(entries) < count:
        raise LedgerError(
            f"ledger {path} is truncated: its head records {count} entries, the file holds {len(entries)}; restore it"
        )
    if len(entries) == count and (count == 0 or entries[-1].hash == last):
        return
    # A crash between replacing the ledger and replacing its head.
    if count >= 1 and len(entries) == count + 1 and entries[-2].hash == last:
        return
    raise LedgerError(f"ledger {path} does not match its head {head_path.name} (tampered); restore it")


_FIELDS = tuple(LedgerEntry.__dataclass_fields__)


def _release_key(entry: LedgerEntry) -> tuple[str, int, str, int]:
    """What makes a release unique: a retried aggregation is another release of its round."""
    return (entry.run_id, entry.round, entry.mechanism, entry.details.get("attempt", 0))


def signed_message(client_id: str, entry_hash: str) -> bytes:
    """What a client signs for one ledger entry: its id and the entry's hash (which covers every field)."""
    return frame_fields("crosslm-ledger-entry-v2", client_id, entry_hash)


def verify_entry(entry: LedgerEntry, identities: Sequence[PublicIdentity]) -> str | None:
    """Why ``entry`` does not carry a valid signature by one of ``identities`` (None when it does).

    ``identities`` are the site's enrolled public keys (a resumed in-process run enrols fresh
    keys, so a site may have several).
    """
    if not entry.signature:
        return "is not signed (written before ledgers were signed, or by an unsigned writer)"
    if not identities:
        return f"is signed, but {entry.client_id} has no enrolled public key to verify it against"
    try:
        signature = bytes.fromhex(entry.signature)
    except ValueError:
        return "has a signature that is not hex"
    message = signed_message(entry.client_id, entry.hash)
    for identity in identities:
        try:
            identity.verify(signature, message)
            return None
        except CryptoError:
            continue
    return f"has a signature that does not verify as {entry.client_id}'s enrolled key (forged or re-signed)"


_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "seq": (int,),
    "run_id": (str,),
    "client_id": (str,),
    "round": (int,),
    "mechanism": (str,),
    "unit": (str,),
    "sample_rate": (*_NUMBER, type(None)),
    "noise_multiplier": (*_NUMBER, type(None)),
    "steps": (int,),
    "max_grad_norm": (*_NUMBER, type(None)),
    "noise_std": (*_NUMBER, type(None)),
    "sensitivity": (*_NUMBER, type(None)),
    "delta": (*_NUMBER, type(None)),
    "epsilon": (dict,),
    "accountant": (str,),
    "epsilon_max": _NUMBER,
    "time": (str,),
    "prev_hash": (str,),
    "hash": (str,),
    "details": (dict,),
    "schema": (str,),
    "signature": (str,),
}


def _parse_line(path: Path, number: int, line: str) -> LedgerEntry:
    where = f"ledger {path} line {number}"
    try:
        raw = json.loads(line, parse_constant=_reject_constant)
    except ValueError:
        raise LedgerError(f"{where} is not valid JSON (truncated or edited)") from None
    if not isinstance(raw, dict) or raw.get("schema") not in (SCHEMA, LEGACY_SCHEMA):
        raise LedgerError(f"{where} is not a {SCHEMA} entry")
    expected = set(_FIELDS) - ({"signature"} if raw["schema"] == LEGACY_SCHEMA else set())
    missing = expected - set(raw)
    unknown = set(raw) - expected
    if missing or unknown:
        raise LedgerError(f"{where} has missing fields {sorted(missing)} or unknown fields {sorted(unknown)}")
    for name, value in raw.items():
        kinds = _FIELD_TYPES[name]
        if isinstance(value, bool) or not isinstance(value, kinds):
            wanted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise LedgerError(f"{where}: field {name!r} is {value!r}, not {wanted}; the entry was edited")
    if raw["mechanism"] not in MECHANISMS:
        raise LedgerError(f"{where} has unknown mechanism {raw['mechanism']!r}")
    try:
        raw["epsilon"] = {str(k): _number_in(v) for k, v in raw["epsilon"].items()}
    except (TypeError, ValueError):
        raise LedgerError(f"{where}: field 'epsilon' must map accountants to numbers; the entry was edited") from None
    _check_ranges(where, raw)
    return LedgerEntry(**raw)


def _check_ranges(where: str, raw: dict[str, Any]) -> None:
    """Values no honest writer produces (a negative epsilon, a rate above 1) are refused by name."""
    problems = [f"epsilon[{k!r}] = {v:g} is negative" for k, v in raw["epsilon"].items() if v < 0 or math.isnan(v)]
    if raw["steps"] < 0:
        problems.append(f"steps = {raw['steps']} is negative")
    rate = raw["sample_rate"]
    if rate is not None and not 0 < rate <= 1:
        problems.append(f"sample_rate = {rate:g} is outside (0, 1]")
    for name in ("noise_multiplier", "max_grad_norm", "noise_std", "sensitivity"):
        if raw[name] is not None and not raw[name] > 0:
            problems.append(f"{name} = {raw[name]:g} is not positive")
    if raw["delta"] is not None and not 0 < raw["delta"] < 1:
        problems.append(f"delta = {raw['delta']:g} is outside (0, 1)")
    if problems:
        raise LedgerError(f"{where}: {'; '.join(problems)}; the entry was edited")


def _reject_constant(name: str) -> float:
    raise ValueError(name)


def _number_in(value: Any) -> float:
    return math.inf if value == "inf" else float(value)


def _number_out(value: float) -> float | str:
    return "inf" if math.isinf(value) else value


def _canonical(raw: dict[str, Any]) -> str:
    # Strict JSON: inf is stored as the string "inf", so every line parses anywhere.
    strict = dict(raw, epsilon={k: _number_out(v) for k, v in raw["epsilon"].items()})
    return json.dumps(strict, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _entry_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(body).encode("utf-8")).hexdigest()


def _entry_line(entry: LedgerEntry) -> str:
    raw = asdict(entry)
    if entry.schema == LEGACY_SCHEMA:
        del raw["signature"]
    return _canonical(raw) + "\n"


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
