"""Whatever bytes arrive, the wire parsers raise only ProtocolError, before any signature check.

The frames here are built by hand (no signing), because parsing happens before verification:
that is the code an unauthenticated sender reaches.
"""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crosslm_secure.crypto.verify import SignedContribution
from crosslm_secure.errors import ProtocolError
from crosslm_secure.protocol.envelope import VERSION, parse

HEADER = {"type": "score.reply", "run_id": "r", "round": 1, "sender": "client-1", "recipient": "server", "seq": 0}


def envelope_frame(header: bytes, blobs: tuple[bytes, ...] = ()) -> bytes:
    parts = [struct.pack(">4sBI", b"CLMS", VERSION, len(header)), header, struct.pack(">H", len(blobs))]
    for blob in blobs:
        parts += [struct.pack(">I", len(blob)), blob]
    return b"".join(parts) + b"\0" * 64


def contribution_frame(header: bytes, ciphertext: bytes = b"ct") -> bytes:
    return (
        b"CLMK\x01"
        + struct.pack(">I", len(header))
        + header
        + struct.pack(">I", len(ciphertext))
        + ciphertext
        + b"\0" * 64
    )


CONTRIBUTION = {
    "run_id": "r",
    "round": 1,
    "attempt": 0,
    "sender": "client-1",
    "participants": ["client-1", "client-2"],
    "fingerprint": "ab",
    "count": 3,
}


def test_well_formed_frames_still_parse() -> None:
    envelope, _, signature = parse(envelope_frame(json.dumps(HEADER | {"body": {}}).encode(), (b"x",)))
    assert envelope.seq == 0 and envelope.blobs == (b"x",) and signature == b"\0" * 64
    contribution = SignedContribution.from_bytes(contribution_frame(json.dumps(CONTRIBUTION).encode()))
    assert contribution.count == 3 and contribution.participants == ("client-1", "client-2")


@pytest.mark.parametrize(
    "header",
    [
        b'{"body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # RecursionError in json
        json.dumps(HEADER | {"body": {}}).encode().replace(b'"seq": 0', b'"seq": ' + b"9" * 5000),  # ValueError
        b"\xff\xfe not utf-8",
        b"[1, 2, 3]",
    ],
    ids=["deeply-nested", "5000-digit-seq", "not-utf8", "not-an-object"],
)
def test_envelope_parse_refuses_hostile_headers_with_protocol_error(header: bytes) -> None:
    with pytest.raises(ProtocolError, match="refused"):
        parse(envelope_frame(header))


@pytest.mark.parametrize(
    "header",
    [
        b'{"participants": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        json.dumps(CONTRIBUTION).encode().replace(b'"count": 3', b'"count": 1e400'),  # OverflowError via int()
        json.dumps(CONTRIBUTION).encode().replace(b'"count": 3', b'"count": ' + b"7" * 5000),
        json.dumps(CONTRIBUTION).encode().replace(b'"round": 1', b'"round": true'),
        json.dumps(CONTRIBUTION).encode().replace(b'"round": 1', b'"round": 1.5'),
        json.dumps(CONTRIBUTION | {"participants": "client-1"}).encode(),
        b'"a string"',
    ],
    ids=["deeply-nested", "count-1e400", "5000-digit-count", "bool-round", "float-round", "str-participants", "str"],
)
def test_contribution_from_bytes_refuses_hostile_headers_with_protocol_error(header: bytes) -> None:
    with pytest.raises(ProtocolError, match="contribution: header"):
        SignedContribution.from_bytes(contribution_frame(header))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=256))
def test_envelope_parse_of_random_bytes_raises_only_protocol_error(data: bytes) -> None:
    for message in (data, b"CLMS\x01" + data, envelope_frame(data)):
        try:
            parse(message)
        except ProtocolError:
            pass


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(st.sampled_from([*HEADER, "body"]) | st.text(max_size=5), _json, max_size=8))
def test_envelope_parse_of_random_headers_raises_only_protocol_error(fields: dict) -> None:
    try:
        parse(envelope_frame(json.dumps(HEADER | {"body": {}} | fields).encode()))
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=256), fields=st.dictionaries(st.sampled_from(list(CONTRIBUTION)), _json, max_size=4))
def test_contribution_from_bytes_raises_only_protocol_error(data: bytes, fields: dict) -> None:
    messages = (
        data,
        b"CLMK\x01" + data,
        contribution_frame(data),
        contribution_frame(json.dumps(CONTRIBUTION | fields).encode()),
    )
    for message in messages:
        try:
            SignedContribution.from_bytes(message)
        except ProtocolError:
            pass
