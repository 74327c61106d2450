"""The server's typed request/reply exchange with the clients, and its transcript.

``Messenger.ask_all`` seals one request per client, sends them at once, and returns each
good reply as a :class:`Reply` of the expected body type with its attachments by name. A
client that crashed, refused or answered badly is reported to ``on_failure`` (the
coordinator excludes it) and left out, so callers never check types or index attachments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from crosslm_secure.errors import CrossLMError, ProtocolError
from crosslm_secure.protocol.envelope import Envelope
from crosslm_secure.protocol.envelope import parse as parse_envelope
from crosslm_secure.protocol.messages import TYPE_OF, EpsilonClaim, TrainReply, pack, type_name, unpack
from crosslm_secure.protocol.party import Party
from crosslm_secure.runstore import RunStore
from crosslm_secure.transport.base import NodeUnavailable, Transport

B = TypeVar("B")


class ClientRefused(CrossLMError):
    """A client answered with an ``error`` message."""


@dataclass(frozen=True)
class Request:
    """One outgoing message: its body and its attachments by name (as the body type declares)."""

    body: Any
    attachments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply(Generic[B]):
    """One verified reply: the envelope, the typed body, the attachments by name, the signed bytes."""

    envelope: Envelope
    body: B
    attachments: dict[str, Any]
    raw: bytes


Failure = Callable[[str, str, bool], None]
"""``(client, reason, dropped)``: a client failed a request; ``dropped`` when it stopped answering."""


class Messenger:
    """Sends typed requests over a transport and writes every message's transcript line.

    Args:
        party: the server's protocol identity (signs requests, verifies replies).
        transport: reaches the client nodes.
        store: the run folder (transcript).
        on_failure: told about every client whose reply is missing or refused.
    """

    def __init__(self, party: Party, transport: Transport, store: RunStore, on_failure: Failure) -> None:
        self.party = party
        self.transport = transport
        self.store = store
        self.on_failure = on_failure

    def ask(self, name: str, request: Request, round_index: int, reply_type: type[B]) -> Reply[B] | None:
        """Send one request; None when the client failed it (and was reported)."""
        return self.ask_all({name: request}, round_index, reply_type).get(name)

    def ask_all(self, requests: dict[str, Request], round_index: int, reply_type: type[B]) -> dict[str, Reply[B]]:
        """Send each client its request at once (sites work in parallel) and check every reply.

        Replies are checked in the order of ``requests``, so the run folder does not depend on
        who was faster.
        """
        expect = TYPE_OF[reply_type]  # type: ignore[index]
        sealed = {}
        for name, request in requests.items():
            blobs = pack(request.body, **request.attachments)
            sealed[name] = self.party.seal(name, round_index, request.body, blobs)
            self._log(sealed[name], "out", name, round_index, type_name(request.body), "sent")
        answers = self.transport.request_many(sealed)
        accepted: dict[str, Reply[B]] = {}
        for name, raw in answers.items():
            try:
                reply = self._check(name, raw, round_index, expect)
            except (NodeUnavailable, ProtocolError, ClientRefused) as exc:
                self.on_failure(name, str(exc), isinstance(exc, NodeUnavailable))
                continue
            accepted[name] = reply
        return accepted

    def _check(self, name: str, raw: bytes | NodeUnavailable, round_index: int, expect: str) -> Reply[Any]:
        if isinstance(raw, NodeUnavailable):
            raise raw
        try:
            envelope, body = self.party.open(raw, expect_round=round_index)
        except ProtocolError:
            self._log(raw, "in", name, round_index, "refused", "refused")
            raise
        claim = body.claim if isinstance(body, TrainReply) else None
        self._log(raw, "in", name, round_index, envelope.type, "accepted", claim=claim)
        if envelope.sender != name:
            raise ProtocolError(f"reply to {name} came from {envelope.sender}")
        if envelope.type == "error":
            raise ClientRefused(body.reason)
        if envelope.type != expect:  # the body was decoded as this type's model
            raise ProtocolError(f"{name} answered {envelope.type}, expected {expect}")
        return Reply(envelope, body, unpack(envelope), raw)

    def _log(
        self,
        message: bytes,
        direction: str,
        peer: str,
        round_index: int,
        kind: str,
        status: str,
        *,
        claim: EpsilonClaim | None = None,
    ) -> None:
        """Transcript: type, size, hash and envelope routing only; never contents.

        ``status`` is ``sent`` (sealed and signed by the server), ``accepted`` (signature
        verified and sequence number fresh: ``Inbox.open`` succeeded) or ``refused``;
        ``sender``/``recipient``/``seq`` come from the envelope header (null when unparseable),
        so an audit can show every message was signed and accepted once. An accepted
        ``train.reply`` also keeps the client's signed epsilon claim (``claim``).
        """
        try:
            header, _, _ = parse_envelope(message)
            sender, recipient, seq = header.sender, header.recipient, header.seq
        except ProtocolError:
            sender = recipient = seq = None
        self.store.transcript(
            direction=direction,
            peer=peer,
            round=round_index,
            bytes=len(message),
            sha256=hashlib.sha256(message).hexdigest(),
            type=kind,
            status=status,
            sender=sender,
            recipient=recipient,
            seq=seq,
            **({"claim": claim.model_dump()} if claim is not None else {}),
        )
