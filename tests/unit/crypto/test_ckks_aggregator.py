from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crosslm_secure.aggregation.base import Aggregator
from crosslm_secure.aggregation.ckks import CKKSAggregator
from crosslm_secure.crypto.ckks import decrypt_aggregate
from crosslm_secure.crypto.verify import SignedContribution
from crosslm_secure.errors import CryptoError, ProtocolError
from crosslm_secure.privacy.noise_source import NoiseStreams, Purpose

RUN = "run-test"


def _parties(federation, k, *, sigma=0.0, quorum=2):
    clients = federation["clients"][:k]
    aggregators = [
        CKKSAggregator.for_client(
            keys,
            federation["contexts"][keys.site],
            federation["registry"],
            run_id=RUN,
            quorum=quorum,
            noise_sigma=sigma,
            rng=np.random.default_rng(i),
        )
        for i, keys in enumerate(clients)
    ]
    server = CKKSAggregator.for_server(federation["public"], federation["registry"], run_id=RUN, quorum=quorum)
    return aggregators, server, [k.site for k in clients]


def _run_round(aggregators, server, sites, scores, round_index=1, attempt=0):
    blobs = [
        a.protect(s, round_index=round_index, participants=sites, attempt=attempt).contribution
        for a, s in zip(aggregators, scores, strict=True)
    ]
    return blobs, server.combine(blobs)


def test_it_is_an_aggregator(federation):
    aggregators, server, _ = _parties(federation, 2)
    typed: Aggregator = server  # checked by the type checker; the Protocol is not runtime_checkable
    assert typed.protected and typed.name == "ckks"
    assert all(callable(getattr(server, call)) for call in ("protect", "combine", "reveal"))


@pytest.mark.parametrize("k,count", [(2, 1), (3, 100), (5, 2049), (10, 10_000)])
def test_mean_matches_plaintext_with_noise_off(federation, k, count):
    aggregators, server, sites = _parties(federation, k)
    scores = np.random.default_rng(k).random((k, count))
    blobs, aggregate = _run_round(aggregators, server, sites, scores)
    mean = aggregators[-1].reveal(aggregate, blobs, count=count)
    assert np.max(np.abs(mean - scores.mean(axis=0))) <= 1e-6


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(2, 10), count=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_mean_matches_plaintext_property(federation, k, count, seed):
    aggregators, server, sites = _parties(federation, k)
    scores = np.random.default_rng(seed).random((k, count))
    blobs, aggregate = _run_round(aggregators, server, sites, scores, round_index=seed)
    mean = aggregators[0].reveal(aggregate, blobs, count=count)
    assert np.max(np.abs(mean - scores.mean(axis=0))) <= 1e-6


def test_server_side_is_public_and_cannot_protect_or_reveal(federation):
    aggregators, server, sites = _parties(federation, 3)
    assert server.context.is_public and not server.context.has_secret_key
    with pytest.raises(CryptoError, match="server cannot protect"):
        server.protect(np.zeros(3), round_index=1, participants=sites)
    blobs, aggregate = _run_round(aggregators, server, sites, np.zeros((3, 3)))
    with pytest.raises(CryptoError, match="server cannot reveal"):
        server.reveal(aggregate, blobs, count=3)
    with pytest.raises(CryptoError, match="secret key"):
        CKKSAggregator.for_server(federation["contexts"]["client-01"], federation["registry"], run_id=RUN)


def test_single_contribution_decrypts_far_from_the_scores(federation):
    aggregators, server, sites = _parties(federation, 3)
    scores = np.random.default_rng(0).random((3, 500))
    blobs, _ = _run_round(aggregators, server, sites, scores)
    single = decrypt_aggregate(
        federation["contexts"]["client-01"], SignedContribution.from_bytes(blobs[1]).ciphertext, count=500
    )
    assert np.median(np.abs(single - scores[1])) > 100


def test_noise_share_and_release_parameters(federation):
    aggregators, server, sites = _parties(federation, 4, sigma=0.5)
    scores = np.full((4, 4000), 0.5)
    blobs, aggregate = _run_round(aggregators, server, sites, scores)
    mean = aggregators[0].reveal(aggregate, blobs, count=4000)
    # Sum carries N(0, 0.5^2); the mean N(0, (0.5/4)^2).
    assert abs(np.std(mean - 0.5) - 0.125) < 0.01
    release = aggregators[0].protect(scores[0], round_index=2, participants=sites).release
    assert release.sigma_total == 0.5 and release.share_sigma == pytest.approx(0.25)
    assert release.count == 4000 and release.contributors == 4 and release.sensitivity_per_score == 1.0


def test_scores_are_clipped_before_release(federation):
    aggregators, server, sites = _parties(federation, 2)
    scores = np.array([[1.7, -0.3], [0.5, 0.5]])
    blobs, aggregate = _run_round(aggregators, server, sites, scores)
    assert np.allclose(aggregators[0].reveal(aggregate, blobs, count=2), [0.75, 0.25], atol=1e-6)


def test_dropout_then_retry_with_new_attempt(federation):
    aggregators, server, sites = _parties(federation, 4)
    scores = np.random.default_rng(3).random((4, 20))
    blobs = [
        a.protect(s, round_index=2, participants=sites).contribution for a, s in zip(aggregators, scores, strict=True)
    ]
    aggregate = server.combine(blobs[:3])  # client-04 dropped out after masking
    with pytest.raises(ProtocolError, match="omitted"):
        aggregators[0].reveal(aggregate, blobs[:3], count=20)
    survivors = sites[:3]
    blobs, aggregate = _run_round(aggregators[:3], server, survivors, scores[:3], round_index=2, attempt=1)
    mean = aggregators[0].reveal(aggregate, blobs, count=20)
    assert np.max(np.abs(mean - scores[:3].mean(axis=0))) <= 1e-6


def test_quorum_and_duplicates(federation):
    aggregators, server, sites = _parties(federation, 3, quorum=3)
    with pytest.raises(ProtocolError, match="quorum"):
        aggregators[0].protect(np.zeros(2), round_index=1, participants=sites[:2])
    blobs = [a.protect(np.zeros(2), round_index=1, participants=sites).contribution for a in aggregators]
    with pytest.raises(ProtocolError, match="twice"):
        server.combine(blobs + [blobs[0]])


def test_reveal_needs_a_round(federation):
    aggregators, server, sites = _parties(federation, 2)
    fresh = CKKSAggregator.for_client(
        federation["clients"][0], federation["contexts"]["client-01"], federation["registry"], run_id=RUN
    )
    blobs, aggregate = _run_round(aggregators, server, sites, np.zeros((2, 2)))
    with pytest.raises(ProtocolError, match="round_index"):
        fresh.reveal(aggregate, blobs, count=2)
    assert np.allclose(fresh.reveal(aggregate, blobs, count=2, round_index=1, participants=sites), 0, atol=1e-6)


def test_seeded_score_noise_is_each_clients_stream_of_its_round_and_attempt(federation):
    sigma, seed, count = 0.5, 7, 4
    clients = federation["clients"][:2]
    sites = [k.site for k in clients]
    scores = np.full((2, count), 0.5)

    def revealed(source: str, attempt: int) -> np.ndarray:
        aggregators = [
            CKKSAggregator.for_client(
                keys,
                federation["contexts"][keys.site],
                federation["registry"],
                run_id=RUN,
                noise_sigma=sigma,
                noise=NoiseStreams(source, seed, keys.site),
            )
            for keys in clients
        ]
        server = CKKSAggregator.for_server(federation["public"], federation["registry"], run_id=RUN)
        blobs, aggregate = _run_round(aggregators, server, sites, scores, attempt=attempt)
        return aggregators[0].reveal(aggregate, blobs, count=count)

    shares = [
        NoiseStreams("seeded", seed, site)
        .numpy_generator(round_index=1, attempt=0, purpose=Purpose.SCORE_NOISE)
        .normal(0.0, sigma / np.sqrt(2), count)
        for site in sites
    ]
    first = revealed("seeded", 0)
    assert np.max(np.abs(first - (0.5 + np.mean(shares, axis=0)))) <= 1e-6
    assert np.max(np.abs(revealed("seeded", 0) - first)) <= 1e-6
    assert np.max(np.abs(revealed("seeded", 1) - first)) > 1e-4, "a retried attempt must draw fresh noise"
    assert np.max(np.abs(revealed("os", 0) - revealed("os", 0))) > 1e-4
