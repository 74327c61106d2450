"""``flower-supernode`` with two of Flower's fixed waits shortened; nothing else changes.

Flower's SuperNode (flwr 1.41; no option sets either) waits:

- 3 s after every pull that brings no message, and 0.5 s between looks at its own memory for
  the ClientApp's reply (``flwr.supernode.start_client_internal``). A CrossLM round is five
  request/reply exchanges (train, score, reveal, enhance, evaluate), so every round waited
  about 9 s on these sleeps alone. Ours waits ``IDLE_PULL`` and ``LOCAL_POLL`` seconds: the
  loop module's ``time`` is swapped for a clock whose ``sleep`` maps exactly those two
  durations and passes every other call through.
- a heartbeat interval of 30 s, and the SuperLink counts a SuperNode online until two
  intervals pass without one. A site whose process died could not rejoin for about a minute,
  because the SuperLink refuses to activate a key it still lists online. Ours announces
  ``HEARTBEAT_INTERVAL`` (Flower's allowed minimum), so a dead site is released after 20 s;
  it then sends a heartbeat about every 4 s.

A Flower release that moves either name refuses to start here with a sentence, rather than
running with the long waits unnoticed.
"""

from __future__ import annotations

import sys
import time
from types import ModuleType

FLOWER_IDLE_SLEEP = 3
"""The seconds Flower's SuperNode sleeps after a pull that brought no message."""

IDLE_PULL = 0.5
"""The seconds ours waits instead: two pulls a second per idle site, cheap on the SuperLink."""

FLOWER_LOCAL_POLL = 0.5
"""The seconds it sleeps between looks at its own memory for a reply or an object."""

LOCAL_POLL = 0.1
"""The seconds ours sleeps instead (a look at a dict in the same process)."""

HEARTBEAT_INTERVAL = 10
"""The heartbeat interval ours announces (``flwr.common.constant.HEARTBEAT_MIN_INTERVAL``)."""


class _Clock(ModuleType):
    """The ``time`` module as the SuperNode loop sees it: real, except its idle pull and local poll."""

    def __init__(self, idle: float, local: float) -> None:
        super().__init__("time")
        self._waits = {FLOWER_IDLE_SLEEP: idle, FLOWER_LOCAL_POLL: local}

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(self._waits.get(seconds, seconds))


def shorten_waits(idle: float = IDLE_PULL, local: float = LOCAL_POLL, heartbeat: float = HEARTBEAT_INTERVAL) -> None:
    """Shorten the SuperNode's idle pull, local poll and heartbeat; ``SystemExit`` with a sentence if Flower changed."""
    from flwr.supercore import heartbeat as sender
    from flwr.supernode import fleet_http_connection as connection
    from flwr.supernode import start_client_internal as loop

    unchanged = (
        getattr(loop, "time", None) is time
        and isinstance(getattr(connection, "HEARTBEAT_DEFAULT_INTERVAL", None), int)
        and isinstance(getattr(sender, "HEARTBEAT_DEFAULT_INTERVAL", None), int)
    )
    if not unchanged:
        raise SystemExit(
            "This Flower release's SuperNode no longer has the waits flwr 1.41 had; "
            "pin flwr to the version in requirements/constraints.txt."
        )
    loop.time = _Clock(idle, local)  # type: ignore[attr-defined]
    connection.HEARTBEAT_DEFAULT_INTERVAL = heartbeat  # what it announces to the SuperLink
    sender.HEARTBEAT_DEFAULT_INTERVAL = heartbeat  # how often it sends one


def main() -> None:
    shorten_waits()
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    sys.exit(flower_supernode())


if __name__ == "__main__":
    main()
