"""The transport interface: carry sealed protocol bytes to a node and bring its reply back.

Written once against this interface, the coordinator runs unchanged in-process (research)
and over Flower (deployment). Transports carry bytes only; no Python objects cross.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from crosslm_secure.errors import CrossLMError


class NodeUnavailable(CrossLMError):
    """A node did not answer (crashed, disconnected or timed out)."""


class Transport(Protocol):
    def node_ids(self) -> list[str]:
        """The client nodes this transport can reach."""
        ...

    def request(self, node_id: str, message: bytes, *, timeout: float | None = None) -> bytes:
        """Deliver ``message`` to ``node_id`` and return its reply bytes.

        Raises:
            NodeUnavailable: the node crashed, is unknown, or did not answer in time.
        """
        ...

    def request_many(
        self, messages: Mapping[str, bytes], *, timeout: float | None = None
    ) -> dict[str, bytes | NodeUnavailable]:
        """Deliver one message to each node at once and collect every reply.

        Sites work in parallel, so a phase costs its slowest site, not the sum. A node that
        fails gets its ``NodeUnavailable`` in the result instead of a reply; nothing raises.
        """
        ...

    def rejoined(self, node_ids: Sequence[str]) -> list[str]:
        """Of these nodes, the ones that answer again (a restarted or reconnected site).

        Called between rounds with the nodes the coordinator dropped; a node returned here
        is no longer treated as down.
        """
        ...
