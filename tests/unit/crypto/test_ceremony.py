from __future__ import annotations

import stat

import pytest

from crosslm_secure.crypto.ceremony import (
    accept_public_context,
    accept_secret_context,
    deal_context,
    load_context,
    save_context,
    unwrap_secret,
    wrap_secret,
)
from crosslm_secure.crypto.keys import ParticipantKeys, Registry
from crosslm_secure.errors import CryptoError

RUN_ID = "run-test"  # as in conftest.py


def test_every_client_gets_the_same_secret_context(federation):
    fingerprints = {c.fingerprint for c in federation["contexts"].values()}
    assert fingerprints == {federation["public"].fingerprint}
    assert all(not c.is_public for c in federation["contexts"].values())


def test_server_gets_public_context_without_galois_keys(federation):
    public = federation["public"]
    assert public.is_public and not public.has_secret_key and not public.has_galois_keys
    assert set(federation["dealt"].wrapped) == {k.site for k in federation["clients"][1:]}  # none for the server


def test_server_cannot_open_a_wrap(federation):
    dealt, server = federation["dealt"], federation["server"]
    dealer = federation["registry"].get(federation["clients"][0].site)
    with pytest.raises(CryptoError):
        unwrap_secret(server, dealer, dealt.wrapped["client-02"], run_id=RUN_ID)
    # Even claiming to be the recipient, the server lacks client-02's X25519 key.
    impostor = ParticipantKeys("client-02", "client", server.signing_key, server.exchange_key)
    with pytest.raises(CryptoError, match="cannot be opened"):
        unwrap_secret(impostor, dealer, dealt.wrapped["client-02"], run_id=RUN_ID)


def test_wrap_opens_only_for_its_recipient_run_and_sender():
    a, b, c = (ParticipantKeys.generate(f"client-{i}") for i in (1, 2, 3))
    blob = wrap_secret(a, b.public(), b"secret", run_id="run-1")
    assert unwrap_secret(b, a.public(), blob, run_id="run-1") == b"secret"
    with pytest.raises(CryptoError):
        unwrap_secret(c, a.public(), blob, run_id="run-1")
    with pytest.raises(CryptoError):
        unwrap_secret(b, a.public(), blob, run_id="run-2")
    with pytest.raises(CryptoError, match="forged"):
        unwrap_secret(b, c.public(), blob, run_id="run-1")
    tampered = bytearray(blob)
    tampered[60] ^= 1
    with pytest.raises(CryptoError):
        unwrap_secret(b, a.public(), bytes(tampered), run_id="run-1")
    with pytest.raises(CryptoError, match="truncated"):
        unwrap_secret(b, a.public(), blob[:50], run_id="run-1")


def test_announcement_from_other_run_or_non_client_is_refused(federation):
    dealt, registry = federation["dealt"], federation["registry"]
    with pytest.raises(CryptoError, match="replayed"):
        accept_public_context(
            registry, announcement=dealt.announcement, public_context=dealt.public_context, run_id="other-run"
        )
    with pytest.raises(CryptoError, match="enrolled client"):
        deal_context(federation["server"], registry, run_id=RUN_ID, preset="n4096")


def test_server_refuses_a_secret_context(federation):
    dealt = federation["dealt"]
    with pytest.raises(CryptoError, match="secret key"):
        accept_public_context(
            federation["registry"],
            announcement=dealt.announcement,
            public_context=dealt.secret_context.to_bytes(),
            run_id=RUN_ID,
        )


def test_substituted_context_is_refused():
    a, b = ParticipantKeys.generate("client-1"), ParticipantKeys.generate("client-2")
    registry = Registry([a.public(), b.public()])
    first = deal_context(a, registry, run_id="r", preset="n4096")
    second = deal_context(a, registry, run_id="r", preset="n4096")
    with pytest.raises(CryptoError, match="foreign"):
        accept_secret_context(
            b, registry, announcement=first.announcement, wrapped=second.wrapped["client-2"], run_id="r"
        )


def test_secret_context_at_rest(tmp_path, small_context):
    path = tmp_path / "ckks.ctx"
    save_context(small_context, path, passphrase="twelve chars!")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_context(path, "twelve chars!", fingerprint=small_context.fingerprint)
    assert loaded.has_secret_key and loaded.fingerprint == small_context.fingerprint
