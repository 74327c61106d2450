"""The signed envelope refuses anything malformed, forged, replayed or misaddressed."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from crosslm_secure.errors import ProtocolError
from crosslm_secure.protocol.envelope import Inbox, parse, seal
from crosslm_secure.protocol.messages import EvaluateRequest, ScoreReply
from crosslm_secure.protocol.party import Party, in_memory_identities, party_of


@pytest.fixture()
def parties() -> tuple[Party, Party]:
    keys, registry = in_memory_identities("server", ["client-1"])
    server = party_of(keys["server"], "run-a", registry)
    client = party_of(keys["client-1"], "run-a", registry)
    return server, client


def test_round_trip_keeps_body_blobs_and_binding(parties: tuple[Party, Party]) -> None:
    server, client = parties
    message = client.seal("server", 3, ScoreReply(count=2, aggregator="plaintext"), [b"\x00\x01", b""])
    envelope, body = server.open(message)
    assert (envelope.type, envelope.sender, envelope.recipient, envelope.round) == (
        "score.reply",
        "client-1",
        "server",
        3,
    )
    assert body == ScoreReply(count=2, aggregator="plaintext")
    assert envelope.blobs == (b"\x00\x01", b"")


def test_every_flipped_byte_is_refused(parties: tuple[Party, Party]) -> None:
    server, client = parties
    message = client.seal("server", 1, ScoreReply(count=1, aggregator="plaintext"), [b"scores"])
    for position in range(0, len(message), 7):
        tampered = bytearray(message)
        tampered[position] ^= 0x01
        with pytest.raises(ProtocolError):
            server.open(bytes(tampered))
    server.open(message)  # the original is still accepted: refusals changed no state


def test_replay_is_refused_and_state_only_moves_on_accept(parties: tuple[Party, Party]) -> None:
    server, client = parties
    first = client.seal("server", 1, EvaluateRequest())
    server.open(first)
    with pytest.raises(ProtocolError, match="replays"):
        server.open(first)


def test_wrong_run_recipient_round_and_unknown_sender(parties: tuple[Party, Party]) -> None:
    server, client = parties
    keys, _ = in_memory_identities("server", ["client-1"])
    other_run = Party("client-1", "run-b", client.key, client.directory)
    with pytest.raises(ProtocolError, match="belongs to run"):
        server.open(other_run.seal("server", 1, EvaluateRequest()))
    with pytest.raises(ProtocolError, match="addressed to"):
        server.open(client.seal("client-2", 1, EvaluateRequest()))
    with pytest.raises(ProtocolError, match="expected round 2"):
        server.open(client.seal("server", 1, EvaluateRequest()), expect_round=2)
    stranger = Party("client-9", "run-a", Ed25519PrivateKey.generate(), client.directory)
    with pytest.raises(ProtocolError, match="not enrolled"):
        server.open(stranger.seal("server", 1, EvaluateRequest()))
    impostor = Party("client-1", "run-a", keys["client-1"].signing_key, client.directory)  # right name, wrong key
    with pytest.raises(ProtocolError, match="does not verify"):
        server.open(impostor.seal("server", 1, EvaluateRequest()))


def test_oversize_and_truncated_messages_are_refused(parties: tuple[Party, Party]) -> None:
    server, client = parties
    message = client.seal("server", 1, ScoreReply(count=1, aggregator="x"), [b"a" * 1000])
    small_inbox = Inbox("server", "run-a", server.directory, max_bytes=500)
    with pytest.raises(ProtocolError, match="over the 500-byte limit"):
        small_inbox.open(message)
    for cut in (0, 5, len(message) // 2, len(message) - 1):
        with pytest.raises(ProtocolError):
            server.open(message[:cut])


def test_body_must_match_its_schema(parties: tuple[Party, Party]) -> None:
    server, client = parties
    raw = seal(
        client.key,
        type="score.reply",
        run_id="run-a",
        round=1,
        sender="client-1",
        recipient="server",
        seq=1,
        body={"count": -1, "aggregator": "x"},
    )
    with pytest.raises(ProtocolError, match="count"):
        server.open(raw)
    raw = seal(
        client.key, type="no.such", run_id="run-a", round=1, sender="client-1", recipient="server", seq=2, body={}
    )
    with pytest.raises(ProtocolError, match="unknown type"):
        server.open(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parse_never_crashes_on_garbage(blob: bytes) -> None:
    try:
        parse(blob)
    except ProtocolError:
        pass
