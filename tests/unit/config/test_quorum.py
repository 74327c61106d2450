"""The decryption quorum has one definition: ``run.min_clients``, and never fewer than two."""

from __future__ import annotations

import pytest

from crosslm_secure.config import MIN_QUORUM, RunConfig


@pytest.mark.parametrize(("min_clients", "quorum"), [(1, 2), (2, 2), (3, 3), (7, 7)])
def test_the_quorum_is_min_clients_and_at_least_two(min_clients: int, quorum: int) -> None:
    assert MIN_QUORUM == 2
    assert RunConfig(min_clients=min_clients).decryption_quorum() == quorum
