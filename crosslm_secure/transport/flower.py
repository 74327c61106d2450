"""Flower transport: the coordinator's sealed bytes carried in Flower messages (deployment).

The ServerApp holds a Flower ``Grid``; each request becomes one ``query`` message whose
``RecordDict`` has a single ``ConfigRecord`` ``crosslm`` with the bytes under ``message``.
The reply comes back the same way. Nothing but those bytes crosses; signatures, replay
protection and encryption stay in the protocol layer, TLS and node authentication in Flower.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from flwr.app import ConfigRecord, Message, RecordDict

from crosslm_secure.transport.base import NodeUnavailable

RECORD = "crosslm"
FIELD = "message"
HELLO = "query.hello"
PROTOCOL = "query"
HELLO_TIMEOUT = 120.0
"""Seconds connected SuperNodes have to answer the site-name query."""
REJOIN_PROBE = 30.0
"""Seconds a reconnected SuperNode has to answer the site-name query between rounds."""


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
        reply = self.request_many({node_id: message}, timeout=timeout)[node_id]
        if isinstance(reply, NodeUnavailable):
            raise reply
        return reply

    def request_many(
        self, messages: Mapping[str, bytes], *, timeout: float | None = None
    ) -> dict[str, bytes | NodeUnavailable]:
        """Push every message in one go and pull replies until all are in or ``timeout`` passes."""
        limit = self._timeout if timeout is None else timeout
        results: dict[str, bytes | NodeUnavailable] = {}
        outgoing: dict[str, Message] = {}
        for node_id, message in messages.items():
            if not isinstance(message, bytes):
                raise TypeError("transport carries bytes only")
            if node_id in self._down:
                results[node_id] = NodeUnavailable(f"node {node_id} is down ({self._down[node_id]})")
            elif node_id not in self._nodes:
                results[node_id] = NodeUnavailable(f"node {node_id} is not connected to this SuperLink")
            else:
                outgoing[node_id] = Message(
                    wrap(message), dst_node_id=self._nodes[node_id], message_type=PROTOCOL, ttl=limit + 60.0
                )
        by_node = {self._nodes[node_id]: node_id for node_id in outgoing}
        for reply in _send_and_receive(self._grid, list(outgoing.values()), limit):
            node_id = by_node.get(reply.metadata.src_node_id)
            if node_id is None or node_id in results:
                continue
            if reply.has_error():
                self._down[node_id] = f"Flower error {reply.error.code}: {reply.error.reason}"
                results[node_id] = NodeUnavailable(f"node {node_id} failed: {reply.error.reason}")
                continue
            try:
                results[node_id] = unwrap(reply.content)
            except NodeUnavailable as exc:
                results[node_id] = exc
        for node_id in outgoing:
            if node_id not in results:
                self._down[node_id] = f"no answer within {limit:.0f}s"
                results[node_id] = NodeUnavailable(
                    f"node {node_id} did not answer within {limit:.0f}s (stalled or disconnected)"
                )
        return {node_id: results[node_id] for node_id in messages}

    def rejoined(self, node_ids: Sequence[str]) -> list[str]:
        """Sites among ``node_ids`` that answer again: connected and not down, or found by asking
        every SuperNode the SuperLink lists online that no live site holds (a restarted site)."""
        back = [name for name in node_ids if name in self._nodes and name not in self._down]
        missing = [name for name in node_ids if name not in back]
        live = {self._nodes[name] for name in self._nodes if name not in self._down}
        candidates = sorted(set(self._grid.get_node_ids()) - live) if missing else []
        if candidates:
            names = _ask_names(self._grid, candidates, REJOIN_PROBE)
            for name in missing:
                if name in names:
                    self._nodes[name] = names[name]
                    self._down.pop(name, None)
                    back.append(name)
        return [name for name in node_ids if name in back]


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
    return _ask_names(grid, nodes, HELLO_TIMEOUT, log)


def _ask_names(grid, nodes: list[int], timeout: float, log: Callable[[str], None] = print) -> dict[str, int]:
    """Site name -> node id, from the nodes that answer the ``query.hello`` in ``timeout`` seconds."""
    hello = [Message(RecordDict(), dst_node_id=n, message_type=HELLO, ttl=timeout + 60.0) for n in nodes]
    names: dict[str, int] = {}
    for reply in _send_and_receive(grid, hello, timeout):
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
