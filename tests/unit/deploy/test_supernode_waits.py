"""The SuperNode entry point shortens exactly Flower's idle pull, local poll and heartbeat.

The Flower tests show the effect end to end (a killed site rejoins within their timeouts);
these pin which of Flower's names it touches, so an upgrade that moves them fails here.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flwr.common.constant import HEARTBEAT_MIN_INTERVAL
from flwr.supercore import heartbeat as sender
from flwr.supernode import fleet_http_connection as connection
from flwr.supernode import start_client_internal as loop

from crosslm_secure.deploy import supernode
from crosslm_secure.deploy.pki import init_pki
from crosslm_secure.deploy.site import supernode_command


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's own values come back after the test, whatever it changed."""
    monkeypatch.setattr(loop, "time", time)
    monkeypatch.setattr(connection, "HEARTBEAT_DEFAULT_INTERVAL", connection.HEARTBEAT_DEFAULT_INTERVAL)
    monkeypatch.setattr(sender, "HEARTBEAT_DEFAULT_INTERVAL", sender.HEARTBEAT_DEFAULT_INTERVAL)


def test_flower_still_has_the_waits_this_module_shortens() -> None:
    assert loop.time is time
    assert connection.HEARTBEAT_DEFAULT_INTERVAL == sender.HEARTBEAT_DEFAULT_INTERVAL == 30
    assert supernode.HEARTBEAT_INTERVAL >= HEARTBEAT_MIN_INTERVAL


def test_only_the_idle_and_local_waits_are_mapped(restored: None, monkeypatch: pytest.MonkeyPatch) -> None:
    supernode.shorten_waits(idle=0.25, local=0.05, heartbeat=12)
    assert connection.HEARTBEAT_DEFAULT_INTERVAL == sender.HEARTBEAT_DEFAULT_INTERVAL == 12
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    for seconds in (supernode.FLOWER_IDLE_SLEEP, supernode.FLOWER_LOCAL_POLL, 1, 7.5):
        loop.time.sleep(seconds)
    assert slept == [0.25, 0.05, 1, 7.5]
    assert loop.time.monotonic is time.monotonic  # everything else is the real module


def test_a_flower_without_those_names_is_refused(restored: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(connection, "HEARTBEAT_DEFAULT_INTERVAL")
    with pytest.raises(SystemExit, match="pin flwr to the version in requirements/constraints.txt"):
        supernode.shorten_waits()
    assert loop.time is time  # nothing half-applied


def test_sites_start_their_supernode_through_this_module(tmp_path: Path) -> None:
    files = init_pki(tmp_path / "pki", ["client-1"], ["127.0.0.1"]).site("client-1")
    command = supernode_command(files, "127.0.0.1:9092", "/tmp/socket", 9094)
    assert command[1:3] == ["-m", "crosslm_secure.deploy.supernode"]
    assert "--auth-supernode-private-key" in command and "--root-certificates" in command
