"""Flower transport: the coordinator's sealed bytes carried in Flower messages (deployment).

The ServerApp holds a Flower ``Grid``; each request becomes one ``query`` message whose
``RecordDict`` has a single ``ConfigRecord`` ``crosslm`` with the bytes under ``message``.
The reply comes back the same way. Nothing but those bytes crosses; signatures, replay
protection and encryption stay in the protocol layer, TLS and node authentication in Flower.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from flwr.app import ConfigRecord, Message, RecordDict

from crosslm_secure.transport.base import NodeUnavailable

RECORD = "crosslm"
FIELD = "message"
HELLO = "query.hello"
PROTOCOL = "query"
HELLO_TIMEOUT = 120.0
"""Seconds connected SuperNodes have to answer the site-name query."""


def wrap(message: bytes) -> RecordDict:
    """Our bytes as Flower record content."""
    return RecordDict({RECORD: ConfigRecord({FIELD: message})})


def unwrap(content: RecordDict) -> bytes:
    """Our bytes out of Flower record content.

    Raises:
        NodeUnavailable: the content is not a crosslm message.
    """
    try:
        value = content.config_records[RECORD][FIELD]
    except KeyError:
        raise NodeUnavailable("a Flower message carried no crosslm record; the peer runs another app") from None
    if not isinstance(value, bytes):
        raise NodeUnavailable("a Flower message carried a crosslm record that is not bytes")
    return value


class FlowerTransport:
    """Reaches client sites through a Flower ``Grid`` (inside a ServerApp).

    Args:
        grid: the ServerApp's grid.
        nodes: site name -> Flower node id (from :func:`discover_sites`).
        timeout: seconds a site may take to answer one request (any phase) before it counts as down.
    """

    def __init__(self, grid, nodes: Mapping[str, int], timeout: float) -> None:  # grid: flwr.serverapp.Grid
        self._grid = grid
        self._nodes = dict(nodes)
        self._timeout = timeout
        self._down: dict[str, str] = {}

    def node_ids(self) -> list[str]:
        return sorted(self._nodes)

    def request(self, node_id: str, message: bytes, *, timeout: float | None = None) -> bytes:
        if not isinstance(message, bytes):
            raise TypeError("transport carries bytes only")
        if node_id in self._down:
            raise NodeUnavailable(f"node {node_id} is down ({self._down[node_id]})")
        target = self._nodes.get(node_id)
        if target is None:
            raise NodeUnavailable(f"node {node_id} is not connected to this SuperLink")
        limit = self._timeout if timeout is None else timeout
        out = Message(wrap(message), dst_node_id=target, message_type=PROTOCOL, ttl=limit + 60.0)
        replies = _send_and_receive(self._grid, [out], limit)
        if not replies:
            self._down[node_id] = f"no answer within {limit:.0f}s"
            raise NodeUnavailable(f"node {node_id} did not answer within {limit:.0f}s (stalled or disconnected)")
        reply = replies[0]
        if reply.has_error():
            self._down[node_id] = f"Flower error {reply.error.code}: {reply.error.reason}"
            raise NodeUnavailable(f"node {node_id} failed: {reply.error.reason}")
        return unwrap(reply.content)


def discover_sites(grid, expected: int, wait: float, log: Callable[[str], None] = print) -> dict[str, int]:
    """Wait for ``expected`` SuperNodes, ask each for its site name, and map names to node ids.

    The name a node claims is only a routing hint: every reply is signed with the site's
    enrolled protocol key, so a node that claims another site's name is refused by the coordinator.
    """
    deadline = time.monotonic() + wait
    nodes: list[int] = []
    while time.monotonic() < deadline:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= expected:
            break
        time.sleep(1.0)
    log(f"{len(nodes)} SuperNode(s) connected; asking their site names")
    hello = [Message(RecordDict(), dst_node_id=n, message_type=HELLO, ttl=HELLO_TIMEOUT + 60.0) for n in nodes]
    names: dict[str, int] = {}
    for reply in _send_and_receive(grid, hello, HELLO_TIMEOUT):
        if reply.has_error():
            continue
        site = str(reply.content.config_records[RECORD]["site"])
        if site in names:
            log(f"two SuperNodes claim {site}; keeping node {names[site]}")
            continue
        names[site] = reply.metadata.src_node_id
    return names


def _send_and_receive(grid, messages: list[Message], timeout: float, poll: float = 0.2) -> list[Message]:
    """``Grid.send_and_receive`` with a short pull interval (Flower's own sleeps 3 s between pulls)."""
    pending = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while pending and time.monotonic() < deadline:
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if pending:
            time.sleep(poll)
    return replies
