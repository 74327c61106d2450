"""In-process transport: the default for research runs. Still bytes only."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from crosslm_secure.transport.base import NodeUnavailable

Handler = Callable[[bytes], bytes]


class InProcessTransport:
    """Calls each node's ``handle(bytes) -> bytes`` directly.

    Handlers answer refusals with an ``error`` message; a handler that raises is
    treated like a crashed site: the caller sees ``NodeUnavailable`` and the node is not called
    again until ``rejoined`` restarts it with ``restart(node_id)`` (a fresh handler, as a site
    restarted from its last checkpoint would be).
    """

    def __init__(self, handlers: Mapping[str, Handler], restart: Callable[[str], Handler] | None = None) -> None:
        self._handlers = dict(handlers)
        self._restart = restart
        self._down: dict[str, str] = {}

    def node_ids(self) -> list[str]:
        return sorted(self._handlers)

    def request(self, node_id: str, message: bytes, *, timeout: float | None = None) -> bytes:
        if node_id in self._down:
            raise NodeUnavailable(f"node {node_id} is down ({self._down[node_id]})")
        handler = self._handlers.get(node_id)
        if handler is None:
            raise NodeUnavailable(f"node {node_id} is not connected to this transport")
        if not isinstance(message, bytes):
            raise TypeError("transport carries bytes only")
        try:
            reply = handler(message)
        except Exception as exc:  # a crashing site must not take the server down
            self._down[node_id] = f"{type(exc).__name__}: {exc}"
            raise NodeUnavailable(f"node {node_id} crashed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(reply, bytes):
            raise TypeError(f"node {node_id} replied with {type(reply).__name__}, not bytes")
        return reply

    def request_many(
        self, messages: Mapping[str, bytes], *, timeout: float | None = None
    ) -> dict[str, bytes | NodeUnavailable]:
        # One process, one CPU budget: running the handlers side by side would only interleave them.
        replies: dict[str, bytes | NodeUnavailable] = {}
        for node_id, message in messages.items():
            try:
                replies[node_id] = self.request(node_id, message)
            except NodeUnavailable as exc:
                replies[node_id] = exc
        return replies

    def rejoined(self, node_ids: Sequence[str]) -> list[str]:
        back = []
        for node_id in node_ids:
            if node_id not in self._handlers:
                continue
            if node_id in self._down:
                if self._restart is None:
                    continue
                self._handlers[node_id] = self._restart(node_id)
                del self._down[node_id]
            back.append(node_id)
        return back
