"""The transport interface: carry sealed protocol bytes to a node and bring its reply back.

Written once against this interface, the coordinator runs unchanged in-process (research)
and over Flower (deployment). Transports carry bytes only; no Python objects cross.
"""

from __future__ import annotations

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
