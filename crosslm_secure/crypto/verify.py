"""Verified decryption: the decryptor opens only a sum it has checked.

Clients send ``SignedContribution`` blobs (a CKKS score blob plus an Ed25519 signature over
run, round, attempt, sender, participant set, context fingerprint, count and the
ciphertext's sha256). The server adds them blind and forwards its sum to the round's
decryptor together with the signed contributions, which calls ``verify_and_decrypt``:
every signature checks, the senders are exactly the announced participant set (none
omitted, none twice, none unknown), the set meets the quorum, and the server's aggregate
equals the decryptor's own homomorphic sum of the contributions. Only then is the sum
decrypted; individual contributions are never decrypted.

Layout (big-endian) of a contribution: ``b"CLMK" | u8 version | u32 n | JSON header (n bytes)
| u32 m | score blob (m bytes) | 64-byte signature``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crosslm_secure.crypto.ckks import (
    ScoreContext,
    add,
    blob_count,
    decrypt_aggregate,
)
from crosslm_secure.crypto.keys import ParticipantKeys, Registry, frame_fields
from crosslm_secure.errors import CryptoError, ProtocolError

_CONTRIBUTION_MAGIC = b"CLMK"
_VERSION = 1
_SIGNATURE = 64
_U32 = struct.Struct(">I")
_MAX_HEADER = 64 * 1024


@dataclass(frozen=True)
class SignedContribution:
    """One client's encrypted, masked, noised score vector, signed by that client."""

    run_id: str
    round_index: int
    attempt: int
    sender: str
    participants: tuple[str, ...]
    fingerprint: str
    count: int
    ciphertext: bytes
    signature: bytes = b""

    @classmethod
    def create(
        cls,
        keys: ParticipantKeys,
        context: ScoreContext,
        ciphertext: bytes,
        *,
        run_id: str,
        round_index: int,
        attempt: int,
        participants: Sequence[str],
    ) -> SignedContribution:
        """Wrap and sign a score blob made by ``encrypt_scores``."""
        unsigned = cls(
            run_id,
            round_index,
            attempt,
            keys.site,
            tuple(sorted(set(participants))),
            context.fingerprint,
            blob_count(context, ciphertext),
            ciphertext,
        )
        return cls(**{**unsigned.__dict__, "signature": keys.sign(unsigned.signed_message())})

    def signed_message(self) -> bytes:
        return frame_fields(
            "crosslm-contribution-v1",
            self.run_id,
            self.round_index,
            self.attempt,
            self.sender,
            self.fingerprint,
            self.count,
            len(self.participants),
            *self.participants,
            hashlib.sha256(self.ciphertext).digest(),
        )

    def to_bytes(self) -> bytes:
        header = json.dumps(
            {
                "run_id": self.run_id,
                "round": self.round_index,
                "attempt": self.attempt,
                "sender": self.sender,
                "participants": list(self.participants),
                "fingerprint": self.fingerprint,
                "count": self.count,
            },
            sort_keys=True,
        ).encode()
        return b"".join(
            [
                _CONTRIBUTION_MAGIC,
                bytes([_VERSION]),
                _U32.pack(len(header)),
                header,
                _U32.pack(len(self.ciphertext)),
                self.ciphertext,
                self.signature,
            ]
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> SignedContribution:
        """Parse (not verify) a contribution blob.

        Raises:
            ProtocolError: malformed, truncated or with trailing bytes.
        """
        blob = bytes(blob)
        if len(blob) < 9 or blob[:4] != _CONTRIBUTION_MAGIC or blob[4] != _VERSION:
            raise ProtocolError("contribution: no CLMK v1 header; it is not a crosslm contribution")
        (header_len,) = _U32.unpack_from(blob, 5)
        if header_len > _MAX_HEADER or 9 + header_len + 4 > len(blob):
            raise ProtocolError("contribution: header is truncated or oversize")
        try:
            raw = json.loads(blob[9 : 9 + header_len])
        except (ValueError, RecursionError):  # bad UTF-8/JSON, a 5000-digit number, nesting thousands deep
            raise ProtocolError("contribution: header is not the expected JSON object") from None
        if not isinstance(raw, dict):
            raise ProtocolError("contribution: header is not the expected JSON object")
        participants = raw.get("participants")
        if not isinstance(participants, list) or not all(isinstance(p, str) for p in participants):
            raise ProtocolError("contribution: header field 'participants' must be a list of names")
        fields = (
            _header_field(raw, "run_id", str),
            _header_field(raw, "round", int),
            _header_field(raw, "attempt", int),
            _header_field(raw, "sender", str),
        )
        fingerprint, count = _header_field(raw, "fingerprint", str), _header_field(raw, "count", int)
        offset = 9 + header_len
        (ct_len,) = _U32.unpack_from(blob, offset)
        offset += 4
        if offset + ct_len + _SIGNATURE != len(blob):
            raise ProtocolError(
                f"contribution: length {len(blob)} does not match its declared parts; truncated or oversize"
            )
        return cls(
            *fields, tuple(participants), fingerprint, count, blob[offset : offset + ct_len], blob[offset + ct_len :]
        )

    def verify(self, registry: Registry) -> None:
        """Check the sender is an enrolled client and the signature is theirs."""
        sender = registry.get(self.sender)
        if sender.role != "client":
            raise CryptoError(f"contribution: signer {self.sender} is not a client")
        sender.verify(self.signature, self.signed_message())


def _header_field(raw: dict[str, Any], name: str, kind: type) -> Any:
    """``raw[name]`` when it has type ``kind`` exactly (an int field takes no bool and no float such as 1e400)."""
    value = raw.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError(f"contribution: header field {name!r} must be a {kind.__name__}")
    return value


def check_contribution(
    context: ScoreContext,
    registry: Registry,
    blob: bytes,
    *,
    run_id: str,
    round_index: int,
    attempt: int,
    participants: Sequence[str],
    count: int,
) -> SignedContribution:
    """Parse and verify one contribution against the round it claims to belong to.

    Works with a public context, so the server can refuse bad input early; the decryptor
    re-checks everything itself.

    Raises:
        ProtocolError: wrong run, round, attempt, participant set or count.
        CryptoError: unknown signer, bad signature, or a foreign/malformed ciphertext.
    """
    item = SignedContribution.from_bytes(blob)
    item.verify(registry)
    members = tuple(sorted(set(participants)))
    if (item.run_id, item.round_index, item.attempt) != (run_id, round_index, attempt):
        raise ProtocolError(
            f"contribution from {item.sender}: for run {item.run_id!r} round {item.round_index} attempt "
            f"{item.attempt}, expected {run_id!r} round {round_index} attempt {attempt}; it is replayed or stale"
        )
    if item.participants != members:
        raise ProtocolError(
            f"contribution from {item.sender}: signed for participants {list(item.participants)}, "
            f"announced {list(members)}"
        )
    if item.sender not in members:
        raise ProtocolError(f"contribution: sender {item.sender} is not an announced participant")
    if item.fingerprint != context.fingerprint:
        raise CryptoError(f"contribution from {item.sender}: made under a foreign CKKS context")
    if item.count != count or blob_count(context, item.ciphertext) != count:
        raise ProtocolError(f"contribution from {item.sender}: holds {item.count} scores, expected {count}")
    return item


def verify_and_decrypt(
    context: ScoreContext,
    registry: Registry,
    aggregate: bytes,
    contributions: Sequence[bytes],
    *,
    run_id: str,
    round_index: int,
    attempt: int,
    participants: Sequence[str],
    quorum: int,
    count: int,
) -> np.ndarray:
    """Decryptor side: check the server's aggregate against the signed contributions, then
    return the mean score per sample.

    Raises:
        ProtocolError: below quorum, omitted/duplicated/unannounced contribution, wrong round.
        CryptoError: unknown signer, bad signature, foreign context, or an aggregate that
            is not the sum of the signed contributions.
    """
    if context.is_public:
        raise CryptoError("verify: the decryptor needs the secret context; a public context cannot decrypt")
    members = sorted(set(participants))
    if len(members) < quorum:
        raise ProtocolError(f"verify: {len(members)} participants is below the quorum of {quorum}; refusing to decrypt")
    senders: list[str] = []
    ciphertexts: list[bytes] = []
    for blob in contributions:
        item = check_contribution(
            context,
            registry,
            blob,
            run_id=run_id,
            round_index=round_index,
            attempt=attempt,
            participants=members,
            count=count,
        )
        if item.sender in senders:
            raise ProtocolError(f"verify: {item.sender} contributed twice; refusing a duplicated contribution")
        senders.append(item.sender)
        ciphertexts.append(item.ciphertext)
    missing = sorted(set(members) - set(senders))
    if missing:
        raise ProtocolError(
            f"verify: contributions from {missing} are omitted; the masks only cancel over the full participant set"
        )
    # Ciphertext addition is exact modular arithmetic, so an honest server's sum is
    # byte-identical to ours. The claimed aggregate is never decrypted: a server that sent
    # one client's contribution as "the sum" must learn nothing from the attempt.
    expected = add(context, ciphertexts)
    if bytes(aggregate) != expected:
        raise CryptoError("verify: the aggregate is not the homomorphic sum of the signed contributions")
    return decrypt_aggregate(context, expected, count=count) / len(members)
