from __future__ import annotations

import numpy as np
import pytest

from crosslm_secure.crypto.ckks import ScoreContext, add, encrypt_scores
from crosslm_secure.crypto.keys import ParticipantKeys
from crosslm_secure.crypto.verify import SignedContribution, verify_and_decrypt
from crosslm_secure.errors import CryptoError, ProtocolError

RUN = "run-test"
COUNT = 50


@pytest.fixture(scope="module")
def round_(federation):
    clients = federation["clients"][:4]
    sites = [k.site for k in clients]
    scores = np.random.default_rng(1).random((len(clients), COUNT))
    blobs = []
    for keys, row in zip(clients, scores, strict=True):
        context = federation["contexts"][keys.site]
        contribution = SignedContribution.create(
            keys, context, encrypt_scores(context, row), run_id=RUN, round_index=3, attempt=0, participants=sites
        )
        blobs.append(contribution.to_bytes())
    return {"sites": sites, "scores": scores, "blobs": blobs, "clients": clients}


def _ciphertexts(blobs):
    return [SignedContribution.from_bytes(b).ciphertext for b in blobs]


def _verify(federation, round_, blobs, aggregate=None, *, quorum=2, participants=None, **overrides):
    public = federation["public"]
    aggregate = aggregate if aggregate is not None else add(public, _ciphertexts(blobs))
    kwargs = dict(
        run_id=RUN, round_index=3, attempt=0, participants=participants or round_["sites"], quorum=quorum, count=COUNT
    )
    kwargs.update(overrides)
    return verify_and_decrypt(federation["contexts"]["client-05"], federation["registry"], aggregate, blobs, **kwargs)


def test_honest_aggregate_decrypts_to_the_mean(federation, round_):
    mean = _verify(federation, round_, round_["blobs"])
    assert np.max(np.abs(mean - round_["scores"].mean(axis=0))) <= 1e-6


def test_omitted_contribution_is_refused(federation, round_):
    blobs = round_["blobs"][:3]
    with pytest.raises(ProtocolError, match="omitted"):
        _verify(federation, round_, blobs)


def test_duplicated_contribution_is_refused(federation, round_):
    blobs = round_["blobs"] + [round_["blobs"][0]]
    with pytest.raises(ProtocolError, match="twice"):
        _verify(federation, round_, blobs)


def test_aggregate_that_is_not_the_sum_is_refused(federation, round_):
    public = federation["public"]
    cts = _ciphertexts(round_["blobs"])
    lone = add(public, [cts[0]])  # a server trying to get one contribution decrypted
    with pytest.raises(CryptoError, match="not the homomorphic sum"):
        _verify(federation, round_, round_["blobs"], aggregate=lone)
    doubled = add(public, cts + [cts[1]])
    with pytest.raises(CryptoError, match="not the homomorphic sum"):
        _verify(federation, round_, round_["blobs"], aggregate=doubled)


def test_unknown_signer_is_refused(federation, round_):
    stranger = ParticipantKeys.generate("client-99")
    context = federation["contexts"]["client-01"]
    sites = round_["sites"] + ["client-99"]
    rogue = SignedContribution.create(
        stranger,
        context,
        encrypt_scores(context, np.zeros(COUNT)),
        run_id=RUN,
        round_index=3,
        attempt=0,
        participants=sites,
    )
    with pytest.raises(CryptoError, match="unknown signer"):
        _verify(federation, round_, [rogue.to_bytes()] + round_["blobs"], participants=sites)


def test_forged_signature_is_refused(federation, round_):
    item = SignedContribution.from_bytes(round_["blobs"][0])
    forged = SignedContribution(**{**item.__dict__, "sender": "client-02"}).to_bytes()
    with pytest.raises(CryptoError, match="forged"):
        _verify(federation, round_, [forged] + round_["blobs"][1:])


def test_below_quorum_is_refused(federation, round_):
    with pytest.raises(ProtocolError, match="quorum"):
        _verify(federation, round_, round_["blobs"], quorum=5)


def test_wrong_round_or_participant_set_is_refused(federation, round_):
    with pytest.raises(ProtocolError, match="replayed or stale"):
        _verify(federation, round_, round_["blobs"], round_index=4)
    with pytest.raises(ProtocolError, match="announced"):
        _verify(federation, round_, round_["blobs"], participants=round_["sites"] + ["client-06"])


def test_foreign_context_contribution_is_refused(federation, round_):
    foreign = ScoreContext.create("n4096")
    keys = round_["clients"][0]
    rogue = SignedContribution.create(
        keys,
        foreign,
        encrypt_scores(foreign, np.zeros(COUNT)),
        run_id=RUN,
        round_index=3,
        attempt=0,
        participants=round_["sites"],
    )
    with pytest.raises(CryptoError, match="foreign"):
        _verify(federation, round_, [rogue.to_bytes()] + round_["blobs"][1:])


def test_public_context_cannot_verify_and_decrypt(federation, round_):
    with pytest.raises(CryptoError, match="secret context"):
        verify_and_decrypt(
            federation["public"],
            federation["registry"],
            b"",
            (),
            run_id=RUN,
            round_index=3,
            attempt=0,
            participants=round_["sites"],
            quorum=2,
            count=COUNT,
        )
