"""The ledger's file format: entries, their hash chain and signatures, and reading a file back.

One JSON object per line, keys sorted, schema ``crosslm-ledger/2``. Each entry carries
``prev_hash`` (the previous entry's ``hash``; 64 zeros for the first), ``hash`` = SHA-256 of the
entry's canonical JSON without ``hash`` and ``signature``, and ``signature``: the client's
Ed25519 signature over ``frame_fields("crosslm-ledger-entry-v2", client_id, hash)`` (hex).
Schema ``crosslm-ledger/1`` lines (before signing) still load, unsigned. A sidecar
``ledger.jsonl.head`` holds the entry count and the last hash. Writing is in
:mod:`crosslm_secure.privacy.ledger`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from crosslm_secure.crypto.keys import PublicIdentity, frame_fields
from crosslm_secure.errors import CryptoError, PrivacyError
from crosslm_secure.privacy.accounting import MechanismBlock

SCHEMA = "crosslm-ledger/2"
LEGACY_SCHEMA = "crosslm-ledger/1"
"""Entries written before ledgers were signed: they load, without a signature."""
GENESIS_HASH = "0" * 64
LEDGER_FILE = "ledger.jsonl"


class Mechanism(StrEnum):
    """What a ledger entry released; the values are the strings the ledger's JSON holds."""

    DP_SGD = "dp-sgd"
    GAUSSIAN_SCORE_RELEASE = "gaussian-score-release"
    NON_PRIVATE = "non-private"


MECHANISMS: tuple[str, ...] = tuple(m.value for m in Mechanism)
PARAMETER_FIELDS = (
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

    @property
    def noise_source(self) -> str:
        """Where the release's noise came from: ``os`` or ``seeded`` (``privacy.noise_source``).

        Kept in ``details`` since it was added, so older entries verify unchanged; they say
        nothing, which means ``os``, the only source there was.
        """
        return str(self.details.get("noise_source", "os"))


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
    entries = parse_ledger_text(text, path, client_id=client_id)
    _check_head(path, head_path, entries)
    return entries


def parse_ledger_text(text: str, path: Path, *, client_id: str | None = None) -> list[LedgerEntry]:
    """Parse and verify a ledger's lines (``path`` names it in errors); see :func:`load_entries`.

    Raises:
        LedgerError: a line is malformed, a hash or the chain does not verify, or a key repeats.
    """
    if text and not text.endswith("\n"):
        raise LedgerError(f"ledger {path} is truncated (its last line is incomplete); restore it")
    entries: list[LedgerEntry] = []
    seen: set[tuple[str, int, str, int]] = set()
    prev_hash = GENESIS_HASH
    for number, line in enumerate(text.splitlines(), start=1):
        entry = _parse_line(path, number, line)
        body = {k: v for k, v in asdict(entry).items() if k not in ("hash", "signature")}
        if entry_hash(body) != entry.hash:
            raise LedgerError(f"ledger {path} line {number} was modified (its hash does not match)")
        if entry.prev_hash != prev_hash or entry.seq != number - 1:
            raise LedgerError(
                f"ledger {path} line {number} does not follow line {number - 1} "
                "(hash chain broken: an entry was removed, reordered or inserted)"
            )
        if client_id is not None and entry.client_id != client_id:
            raise LedgerError(f"ledger {path} line {number} belongs to {entry.client_id}, not {client_id}")
        key = release_key(entry)
        if key in seen:
            raise LedgerError(f"ledger {path} line {number} repeats {key}; a round is recorded once")
        seen.add(key)
        entries.append(entry)
        prev_hash = entry.hash
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


def release_key(entry: LedgerEntry) -> tuple[str, int, str, int]:
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


def entry_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(body).encode("utf-8")).hexdigest()


def entry_line(entry: LedgerEntry) -> str:
    raw = asdict(entry)
    if entry.schema == LEGACY_SCHEMA:
        del raw["signature"]
    return _canonical(raw) + "\n"
