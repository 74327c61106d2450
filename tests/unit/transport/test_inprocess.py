"""The in-process transport's fan-out: every node is asked, a crash is one node's result, not an exception."""

from __future__ import annotations

import pytest

from crosslm_secure.transport.base import NodeUnavailable
from crosslm_secure.transport.inprocess import InProcessTransport


def _echo(prefix: bytes):
    return lambda message: prefix + message


def _crash(message: bytes) -> bytes:
    raise RuntimeError("disk full")


def test_request_many_returns_each_reply_and_each_failure_in_the_order_asked() -> None:
    transport = InProcessTransport({"a": _echo(b"a:"), "b": _crash, "c": _echo(b"c:")})
    replies = transport.request_many({"c": b"1", "b": b"2", "a": b"3", "ghost": b"4"})
    assert list(replies) == ["c", "b", "a", "ghost"]
    assert replies["c"] == b"c:1" and replies["a"] == b"a:3"
    assert isinstance(replies["b"], NodeUnavailable) and "disk full" in str(replies["b"])
    assert isinstance(replies["ghost"], NodeUnavailable) and "not connected" in str(replies["ghost"])
    # The crashed node stays down; the others still answer.
    again = transport.request_many({"a": b"5", "b": b"6"})
    assert again["a"] == b"a:5" and "is down" in str(again["b"])
    with pytest.raises(NodeUnavailable, match="is down"):
        transport.request("b", b"7")


def test_request_many_refuses_anything_but_bytes() -> None:
    transport = InProcessTransport({"a": _echo(b"")})
    with pytest.raises(TypeError, match="bytes only"):
        transport.request_many({"a": "text"})  # type: ignore[dict-item]
