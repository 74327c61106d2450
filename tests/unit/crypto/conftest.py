"""Shared crypto fixtures: contexts are costly, so one per preset per session."""

from __future__ import annotations

import pytest

from crosslm_secure.crypto.ceremony import accept_public_context, accept_secret_context, deal_context
from crosslm_secure.crypto.ckks import ScoreContext
from crosslm_secure.crypto.keys import ParticipantKeys, Registry

RUN_ID = "run-test"


@pytest.fixture(scope="session")
def small_context() -> ScoreContext:
    return ScoreContext.create("n4096")


@pytest.fixture(scope="session")
def default_context() -> ScoreContext:
    return ScoreContext.create("n8192")


@pytest.fixture(scope="session")
def federation():
    """Ten enrolled clients and a server that ran the key ceremony (n4096 for speed)."""
    clients = [ParticipantKeys.generate(f"client-{i:02d}") for i in range(1, 11)]
    server = ParticipantKeys.generate("server", "server")
    registry = Registry([k.public() for k in clients] + [server.public()])
    dealt = deal_context(clients[0], registry, run_id=RUN_ID, preset="n4096")
    contexts = {clients[0].site: dealt.secret_context}
    for keys in clients[1:]:
        contexts[keys.site] = accept_secret_context(
            keys, registry, announcement=dealt.announcement, wrapped=dealt.wrapped[keys.site], run_id=RUN_ID
        )
    public = accept_public_context(
        registry, announcement=dealt.announcement, public_context=dealt.public_context, run_id=RUN_ID
    )
    return {
        "clients": clients,
        "server": server,
        "registry": registry,
        "contexts": contexts,
        "public": public,
        "dealt": dealt,
    }
