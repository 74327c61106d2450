"""Attachments travel by name: a message with fewer or more blobs than its type declares is refused
before any handler reads them, and a sender cannot pack an undeclared or missing one."""

from __future__ import annotations

import numpy as np
import pytest

from crosslm_secure.errors import ProtocolError
from crosslm_secure.protocol.envelope import Envelope
from crosslm_secure.protocol.messages import (
    KeysDealReply,
    RevealReply,
    RevealRequest,
    decode_means,
    encode_means,
    mean_score_range,
    pack,
    unpack,
)


def envelope(kind: str, blobs: tuple[bytes, ...]) -> Envelope:
    return Envelope(kind, "run", 1, "client-1", "server", 7, {}, blobs)


def test_named_attachments_round_trip_in_wire_order() -> None:
    body = RevealRequest(participants=["a", "b"], attempt=0, count=2, quorum=2)
    blobs = pack(body, aggregate=b"sum", signed_replies=[b"r1", b"r2"])
    assert blobs == (b"sum", b"r1", b"r2")
    assert unpack(envelope("reveal.request", blobs)) == {"aggregate": b"sum", "signed_replies": [b"r1", b"r2"]}
    dealt = KeysDealReply(recipients=[], fingerprint="f")
    assert unpack(envelope("keys.dealt", pack(dealt, announcement=b"a", public_context=b"c", wraps=[]))) == {
        "announcement": b"a",
        "public_context": b"c",
        "wraps": [],
    }


@pytest.mark.parametrize(
    ("kind", "blobs"),
    [("reveal.reply", ()), ("reveal.reply", (b"x", b"y")), ("reveal.request", ()), ("evaluate.reply", (b"x",))],
)
def test_a_message_with_the_wrong_number_of_attachments_is_refused(kind: str, blobs: tuple[bytes, ...]) -> None:
    with pytest.raises(ProtocolError, match=f"message {kind} from client-1: carries {len(blobs)} attachment"):
        unpack(envelope(kind, blobs))


def test_a_sender_cannot_pack_a_missing_or_undeclared_attachment() -> None:
    body = RevealReply(count=1, contributors=2)
    with pytest.raises(ProtocolError, match="attachments \\[\\] given"):
        pack(body)
    with pytest.raises(ProtocolError, match="declared"):
        pack(body, means=b"x", extra=b"y")


def test_means_must_hold_exactly_count_float64_values() -> None:
    values = np.array([0.25, 0.75])
    np.testing.assert_array_equal(decode_means(encode_means(values), 2, noise_sigma=0.05), values)
    with pytest.raises(ProtocolError, match="holds 16 bytes, expected 3 float64"):
        decode_means(encode_means(values), 3, noise_sigma=0.05)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (float("nan"), "mean score nan of sample 1 is not a finite number"),
        (float("inf"), "mean score inf of sample 1 is not a finite number"),
        (-float("inf"), "mean score -inf of sample 1 is not a finite number"),
        (1e308, "mean score 1e+308 of sample 1 is outside [-1.5, 2.5]"),
        (-1e308, "mean score -1e+308 of sample 1 is outside [-1.5, 2.5]"),
        (2.6, "mean score 2.6 of sample 1 is outside [-1.5, 2.5]"),
    ],
)
def test_means_no_honest_decryption_can_give_are_refused(bad: float, why: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        decode_means(encode_means(np.array([0.5, bad])), 2, noise_sigma=0.05)
    assert str(refused.value).startswith(f"reveal.reply: {why}") and len(str(refused.value)) < 400


def test_the_range_of_a_mean_widens_with_the_feedback_noise() -> None:
    assert mean_score_range(0.0) == (-1.0, 2.0)
    assert mean_score_range(0.05) == (-1.5, 2.5)
    assert decode_means(encode_means(np.array([-1.5, 2.5, 0.0, 1.0])), 4, noise_sigma=0.05).tolist() == [
        -1.5,
        2.5,
        0.0,
        1.0,
    ]
    # noise a run may configure: sigma 1 puts honest means up to ~5 std of the sum outside [0, 1]
    assert decode_means(encode_means(np.array([6.0])), 1, noise_sigma=1.0).tolist() == [6.0]
