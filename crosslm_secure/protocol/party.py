"""A protocol party: a name, a signing key, an inbox, and a sequence counter."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crosslm_secure.crypto.keys import ParticipantKeys, Registry
from crosslm_secure.protocol.envelope import DEFAULT_MAX_MESSAGE_BYTES, Envelope, Inbox, seal
from crosslm_secure.protocol.messages import body_dict, decode_body, type_name


@dataclass
class Party:
    """Seals outgoing messages and opens incoming ones for one participant.

    Args:
        name: this party's enrolled name (``server``, ``client-1``, ...).
        run_id: the run every message is bound to.
        key: this party's Ed25519 signing key (never leaves the party).
        directory: enrolled name -> public key of every party it talks to.
    """

    name: str
    run_id: str
    key: Ed25519PrivateKey
    directory: Mapping[str, Ed25519PublicKey]
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    inbox: Inbox = field(init=False)
    _last_seq: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.inbox = Inbox(self.name, self.run_id, self.directory, self.max_bytes)

    def seal(self, recipient: str, round_index: int, body: Any, blobs: Sequence[bytes] = ()) -> bytes:
        """Sign a typed body for ``recipient``; sequence numbers grow across restarts (time-based)."""
        self._last_seq = max(self._last_seq + 1, time.time_ns())
        return seal(
            self.key,
            type=type_name(body),
            run_id=self.run_id,
            round=round_index,
            sender=self.name,
            recipient=recipient,
            seq=self._last_seq,
            body=body_dict(body),
            blobs=blobs,
        )

    def open(
        self, message: bytes, *, expect_type: str | None = None, expect_round: int | None = None
    ) -> tuple[Envelope, Any]:
        """Verify, accept once, and decode a message addressed to this party."""
        envelope = self.inbox.open(message, expect_type=expect_type, expect_round=expect_round)
        return envelope, decode_body(envelope)


def directory_of(registry: Registry) -> dict[str, Ed25519PublicKey]:
    """Enrolled name -> Ed25519 public key, as every inbox needs it."""
    return {identity.site: Ed25519PublicKey.from_public_bytes(identity.signing_public) for identity in registry}


def in_memory_identities(server: str, clients: Sequence[str]) -> tuple[dict[str, ParticipantKeys], Registry]:
    """Fresh signing and key-exchange keys for every party of an in-process run, and their registry."""
    keys = {server: ParticipantKeys.generate(server, "server")}
    keys.update({name: ParticipantKeys.generate(name, "client") for name in clients})
    return keys, Registry(k.public() for k in keys.values())


def party_of(keys: ParticipantKeys, run_id: str, registry: Registry) -> Party:
    """The protocol party of a participant whose keys are enrolled in ``registry``."""
    return Party(keys.site, run_id, keys.signing_key, directory_of(registry))
