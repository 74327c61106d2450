from __future__ import annotations

import numpy as np
import pytest

from crosslm_secure.crypto.ckks import PRESETS, add, decrypt_aggregate, encrypt_scores
from crosslm_secure.crypto.keys import ParticipantKeys
from crosslm_secure.crypto.masks import (
    MAX_PAIR_MASK,
    client_mask,
    mask_scale,
    mask_seed,
    mask_values,
    pairwise_secret,
    pairwise_secrets,
)
from crosslm_secure.errors import CryptoError


@pytest.fixture(scope="module")
def five():
    return [ParticipantKeys.generate(f"client-{i}") for i in range(1, 6)]


def _masks(keys, participants, **round_fields):
    identities = [k.public() for k in keys]
    return {
        k.site: client_mask(k.site, pairwise_secrets(k, identities), participants=participants, **round_fields)
        for k in keys
        if k.site in participants
    }


def test_pairwise_secret_is_symmetric(five):
    a, b = five[0], five[1]
    assert pairwise_secret(a, b.public()) == pairwise_secret(b, a.public())
    assert pairwise_secret(a, b.public()) != pairwise_secret(a, five[2].public())


def test_masks_cancel_over_the_full_set(five):
    sites = [k.site for k in five]
    masks = _masks(five, sites, run_id="r", round_index=1, attempt=0, count=1000, scale=MAX_PAIR_MASK)
    total = np.sum(list(masks.values()), axis=0)
    assert np.max(np.abs(total)) < 1e-6
    assert np.min(np.abs(masks["client-3"])) > 0 and np.std(masks["client-3"]) > 1000


def test_masks_do_not_cancel_over_a_subset(five):
    sites = [k.site for k in five]
    masks = _masks(five, sites, run_id="r", round_index=1, attempt=0, count=100, scale=1000.0)
    partial = sum(masks[s] for s in sites[:4])
    assert np.median(np.abs(partial)) > 10


def test_fresh_masks_per_round_attempt_and_participant_set(five):
    secret = pairwise_secret(five[0], five[1].public())
    base = dict(run_id="r", round_index=1, attempt=0, participants=["client-1", "client-2", "client-3"])
    seeds = {
        mask_seed(secret, **base),
        mask_seed(secret, **{**base, "attempt": 1}),
        mask_seed(secret, **{**base, "round_index": 2}),
        mask_seed(secret, **{**base, "run_id": "s"}),
        mask_seed(secret, **{**base, "participants": ["client-1", "client-2"]}),
    }
    assert len(seeds) == 5
    # Order and repetition of the participant list do not matter.
    assert mask_seed(secret, **base) == mask_seed(
        secret, **{**base, "participants": ["client-3", "client-2", "client-1", "client-1"]}
    )


def test_mask_values_are_deterministic_and_bounded():
    values = mask_values(b"\x01" * 32, 10_000, 5.0)
    assert np.array_equal(values, mask_values(b"\x01" * 32, 10_000, 5.0))
    assert values.min() >= -5.0 and values.max() < 5.0 and abs(values.mean()) < 0.2


def test_client_outside_the_set_is_refused(five):
    with pytest.raises(CryptoError, match="not in the announced"):
        client_mask("client-9", {}, run_id="r", round_index=1, attempt=0, participants=["client-1"], count=1, scale=1.0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_mask_scale_fits_the_preset(preset):
    for participants in (2, 10, 64):
        scale = mask_scale(PRESETS[preset], participants)
        assert (participants - 1) * scale + 10 < PRESETS[preset].max_abs_value


def test_masked_ckks_sum_keeps_precision(five, small_context):
    """The trade-off measured: masks at the preset's scale still leave sum error <= 1e-6."""
    sites = [k.site for k in five]
    count = 3000
    scale = mask_scale(small_context.preset, len(sites))
    masks = _masks(five, sites, run_id="r", round_index=1, attempt=0, count=count, scale=scale)
    scores = np.random.default_rng(0).random((len(sites), count))
    blobs = [encrypt_scores(small_context, scores[i] + masks[s]) for i, s in enumerate(sites)]
    total = decrypt_aggregate(small_context, add(small_context.public(), blobs), count=count)
    assert np.max(np.abs(total - scores.sum(axis=0))) <= 1e-6
    single = decrypt_aggregate(small_context, blobs[2], count=count)
    assert np.median(np.abs(single - scores[2])) > 100  # one contribution alone is noise
