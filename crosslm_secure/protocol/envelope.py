"""The signed envelope every protocol message travels in, even in-process.

Layout (all integers big-endian), specified in ``protocols/wire-protocol.md``::

    magic "CLMS" | version u8 | header_len u32 | header (canonical JSON, UTF-8)
    | blob_count u16 | blob_count x (blob_len u32 | blob) | signature (64 bytes, Ed25519)

The signature covers every byte before it. The header binds the message to a run, a
round, a sender, a recipient and a per-sender sequence number; ``Inbox.open`` checks all
of them and changes its state (the replay window) only for a message it accepts.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crosslm_secure.errors import ProtocolError

MAGIC = b"CLMS"
VERSION = 2
SIGNATURE_BYTES = 64
MAX_HEADER_BYTES = 8 * 1024 * 1024
MAX_BLOBS = 4096
DEFAULT_MAX_MESSAGE_BYTES = 512 * 1024 * 1024

_PREFIX = struct.Struct(">4sBI")
_COUNT = struct.Struct(">H")
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class Envelope:
    """A decoded, verified message."""

    type: str
    run_id: str
    round: int
    sender: str
    recipient: str
    seq: int
    body: dict[str, Any]
    blobs: tuple[bytes, ...] = ()
    digest: str = ""
    """sha256 hex of the whole signed message (used in transcripts and verification)."""


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def seal(
    key: Ed25519PrivateKey,
    *,
    type: str,
    run_id: str,
    round: int,
    sender: str,
    recipient: str,
    seq: int,
    body: Mapping[str, Any],
    blobs: Sequence[bytes] = (),
) -> bytes:
    """Serialize and sign one message."""
    header = canonical_json(
        {
            "type": type,
            "run_id": run_id,
            "round": round,
            "sender": sender,
            "recipient": recipient,
            "seq": seq,
            "body": dict(body),
        }
    )
    if len(header) > MAX_HEADER_BYTES:
        raise ProtocolError(f"message {type}: header is {len(header)} bytes, over the {MAX_HEADER_BYTES} limit")
    if len(blobs) > MAX_BLOBS:
        raise ProtocolError(f"message {type}: {len(blobs)} blobs, over the {MAX_BLOBS} limit")
    parts = [_PREFIX.pack(MAGIC, VERSION, len(header)), header, _COUNT.pack(len(blobs))]
    for blob in blobs:
        parts += [_LENGTH.pack(len(blob)), bytes(blob)]
    unsigned = b"".join(parts)
    return unsigned + key.sign(unsigned)


def parse(message: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> tuple[Envelope, bytes, bytes]:
    """Split a message into (envelope, signed bytes, signature) without verifying it.

    Raises:
        ProtocolError: the bytes are oversize, truncated, of another version, or malformed.
    """
    if not isinstance(message, bytes | bytearray | memoryview):
        raise ProtocolError(f"message: expected bytes, got {type(message).__name__}")
    message = bytes(message)
    if len(message) > max_bytes:
        raise ProtocolError(f"message: {len(message)} bytes is over the {max_bytes}-byte limit; refused")
    if len(message) < _PREFIX.size + _COUNT.size + SIGNATURE_BYTES:
        raise ProtocolError("message: truncated (shorter than the fixed frame); refused")
    magic, version, header_len = _PREFIX.unpack_from(message, 0)
    if magic != MAGIC:
        raise ProtocolError("message: not a crosslm-secure message (bad magic); refused")
    if version != VERSION:
        raise ProtocolError(f"message: wire version {version} is not supported (this build speaks {VERSION})")
    if header_len > MAX_HEADER_BYTES:
        raise ProtocolError(f"message: header length {header_len} is over the {MAX_HEADER_BYTES} limit")
    offset = _PREFIX.size
    header_bytes = message[offset : offset + header_len]
    offset += header_len
    if len(header_bytes) != header_len or offset + _COUNT.size > len(message):
        raise ProtocolError("message: truncated inside the header; refused")
    (count,) = _COUNT.unpack_from(message, offset)
    offset += _COUNT.size
    if count > MAX_BLOBS:
        raise ProtocolError(f"message: {count} blobs is over the {MAX_BLOBS} limit")
    blobs = []
    for _ in range(count):
        if offset + _LENGTH.size > len(message):
            raise ProtocolError("message: truncated inside a blob length; refused")
        (length,) = _LENGTH.unpack_from(message, offset)
        offset += _LENGTH.size
        if offset + length > len(message) - SIGNATURE_BYTES:
            raise ProtocolError("message: a blob runs past the end of the message; refused")
        blobs.append(message[offset : offset + length])
        offset += length
    if len(message) - offset != SIGNATURE_BYTES:
        raise ProtocolError("message: trailing bytes after the last blob or a bad signature length; refused")
    try:
        header = json.loads(header_bytes.decode())
        envelope = Envelope(
            type=_typed(header, "type", str),
            run_id=_typed(header, "run_id", str),
            round=_typed(header, "round", int),
            sender=_typed(header, "sender", str),
            recipient=_typed(header, "recipient", str),
            seq=_typed(header, "seq", int),
            body=_typed(header, "body", dict),
            blobs=tuple(blobs),
            digest=hashlib.sha256(message).hexdigest(),
        )
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad JSON and integers over Python's 4300-digit limit; RecursionError,
        # a header nested thousands deep. Both are bytes an attacker chose, so both are refusals.
        raise ProtocolError("message: header is not valid UTF-8 JSON within limits; refused") from None
    return envelope, message[:offset], message[offset:]


def _typed(header: Any, name: str, kind: type) -> Any:
    if not isinstance(header, dict) or name not in header:
        raise ProtocolError(f"message: header lacks the field {name!r}; refused")
    value = header[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"message: header field {name!r} must be {kind.__name__}; refused")
    return value


@dataclass
class Inbox:
    """One party's receiving side: who may write to it, and what it has already accepted.

    Args:
        owner: this party's name; messages addressed to anyone else are refused.
        run_id: the run this party takes part in.
        senders: name -> Ed25519 public key of every enrolled party that may write to it.
        max_bytes: largest message accepted.
    """

    owner: str
    run_id: str
    senders: Mapping[str, Ed25519PublicKey]
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    last_seq: dict[str, int] = field(default_factory=dict)

    def open(self, message: bytes, *, expect_type: str | None = None, expect_round: int | None = None) -> Envelope:
        """Verify a message and accept it once.

        Raises:
            ProtocolError: malformed, oversize, unknown sender, bad signature, another run,
                another recipient, wrong round or type, or a replay. State is unchanged.
        """
        envelope = verify(message, self.senders, max_bytes=self.max_bytes)
        if envelope.run_id != self.run_id:
            raise ProtocolError(
                f"message {envelope.type} from {envelope.sender} belongs to run {envelope.run_id!r}, "
                f"not {self.run_id!r}; refused"
            )
        if envelope.recipient != self.owner:
            raise ProtocolError(
                f"message {envelope.type} from {envelope.sender} is addressed to {envelope.recipient!r}, "
                f"not {self.owner!r}; refused"
            )
        if expect_type is not None and envelope.type != expect_type:
            raise ProtocolError(
                f"message from {envelope.sender} is {envelope.type!r}, expected {expect_type!r}; refused"
            )
        if expect_round is not None and envelope.round != expect_round:
            raise ProtocolError(
                f"message {envelope.type} from {envelope.sender} is for round {envelope.round}, "
                f"expected round {expect_round}; refused"
            )
        if envelope.seq <= self.last_seq.get(envelope.sender, -1):
            raise ProtocolError(
                f"message {envelope.type} from {envelope.sender} replays sequence number {envelope.seq}; refused"
            )
        self.last_seq[envelope.sender] = envelope.seq
        return envelope


def verify(
    message: bytes, senders: Mapping[str, Ed25519PublicKey], *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> Envelope:
    """Parse a message and check its signature against its claimed sender's enrolled key.

    Raises:
        ProtocolError: malformed, unknown sender, or a signature that does not verify.
    """
    envelope, signed, signature = parse(message, max_bytes=max_bytes)
    key = senders.get(envelope.sender)
    if key is None:
        raise ProtocolError(f"message {envelope.type}: sender {envelope.sender!r} is not enrolled; refused")
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        raise ProtocolError(
            f"message {envelope.type}: signature of {envelope.sender!r} does not verify (tampered or forged); refused"
        ) from None
    return envelope
