from __future__ import annotations

import struct

import numpy as np
import pytest

from crosslm_secure.crypto.ckks import (
    PRESETS,
    SEAL_128_BIT_MAX_MODULUS,
    CKKSPreset,
    ScoreContext,
    add,
    decrypt_aggregate,
    encrypt_scores,
)
from crosslm_secure.errors import CryptoError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_meet_128_bit_security(name):
    preset = PRESETS[name]
    assert sum(preset.coeff_mod_bit_sizes) <= SEAL_128_BIT_MAX_MODULUS[preset.poly_modulus_degree]
    preset.check_security()


def test_insecure_preset_is_refused():
    with pytest.raises(CryptoError, match="128-bit"):
        ScoreContext.create(CKKSPreset("weak", 4096, (60, 60), 40))


def test_context_has_no_galois_keys_and_public_copy_has_no_secret(small_context):
    assert not small_context.has_galois_keys
    public = small_context.public()
    assert public.is_public and not public.has_secret_key and not public.has_galois_keys
    assert not small_context.is_public  # copying did not strip the original
    assert public.fingerprint == small_context.fingerprint


def test_context_round_trip_and_fingerprint_binding(small_context):
    public_blob = small_context.public().to_bytes()
    loaded = ScoreContext.from_bytes(public_blob, expected_fingerprint=small_context.fingerprint)
    assert loaded.is_public and loaded.fingerprint == small_context.fingerprint
    other = ScoreContext.create("n4096")
    with pytest.raises(CryptoError, match="foreign"):
        ScoreContext.from_bytes(other.public().to_bytes(), expected_fingerprint=small_context.fingerprint)
    with pytest.raises(CryptoError, match="truncated or corrupt"):
        ScoreContext.from_bytes(public_blob[:5000])


@pytest.mark.parametrize("preset", ["n4096", "n8192"])
@pytest.mark.parametrize("clients,count", [(2, 1), (3, 4097), (10, 10_000)])
def test_sum_matches_plaintext(preset, clients, count, small_context, default_context):
    context = small_context if preset == "n4096" else default_context
    scores = np.random.default_rng(clients).random((clients, count))
    blobs = [encrypt_scores(context, row) for row in scores]
    total = add(context.public(), blobs)
    got = decrypt_aggregate(context, total, count=count)
    assert got.shape == (count,)
    assert np.max(np.abs(got / clients - scores.mean(axis=0))) <= 1e-6


def test_public_context_cannot_encrypt_or_decrypt(small_context):
    blob = encrypt_scores(small_context, [0.5, 0.25])
    public = small_context.public()
    with pytest.raises(CryptoError, match="public-only"):
        decrypt_aggregate(public, blob, count=2)
    with pytest.raises(CryptoError, match="public-only"):
        encrypt_scores(public, [0.5])


def test_foreign_truncated_oversize_and_count_mismatch_are_refused(small_context):
    blob = encrypt_scores(small_context, np.linspace(0, 1, 10))
    foreign = ScoreContext.create("n4096")
    with pytest.raises(CryptoError, match="foreign"):
        decrypt_aggregate(foreign, blob, count=10)
    with pytest.raises(CryptoError, match="foreign"):
        add(foreign.public(), [blob])
    with pytest.raises(CryptoError, match="truncated"):
        decrypt_aggregate(small_context, blob[:-100], count=10)
    with pytest.raises(CryptoError, match="truncated"):
        decrypt_aggregate(small_context, blob[:20], count=10)
    with pytest.raises(CryptoError, match="oversize"):
        decrypt_aggregate(small_context, blob + b"\0", count=10)
    with pytest.raises(CryptoError, match="expected 11"):
        decrypt_aggregate(small_context, blob, count=11)
    other = encrypt_scores(small_context, np.zeros(9))
    with pytest.raises(CryptoError, match="different counts"):
        add(small_context, [blob, other])
    # A header lying about the count is caught by the ciphertext-count consistency check.
    forged = blob[:37] + struct.pack(">I", 5000) + blob[41:]
    with pytest.raises(CryptoError, match="inconsistent"):
        decrypt_aggregate(small_context, forged, count=5000)


def test_values_beyond_headroom_and_nan_are_refused(small_context):
    with pytest.raises(CryptoError, match="exceeds"):
        encrypt_scores(small_context, [small_context.preset.max_abs_value * 2])
    with pytest.raises(CryptoError, match="finite"):
        encrypt_scores(small_context, [float("nan")])


def test_bytes_per_score_at_default_preset(default_context):
    count = default_context.preset.slots
    blob = encrypt_scores(default_context, np.random.default_rng(0).random(count))
    assert len(blob) / count <= 100
