"""Recompute protocols/test-vectors/key-ceremony.json; any drift is a protocol change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crosslm_secure.crypto.ceremony import unwrap_secret, wrap_secret
from crosslm_secure.crypto.keys import ParticipantKeys, frame_fields
from crosslm_secure.crypto.masks import client_mask, mask_seed, mask_values, pairwise_secret

VECTORS = json.loads((Path(__file__).parents[3] / "protocols" / "test-vectors" / "key-ceremony.json").read_text())


@pytest.fixture(scope="module")
def keys() -> dict[str, ParticipantKeys]:
    return {
        v["site"]: ParticipantKeys.from_seeds(
            v["site"], v["role"], bytes.fromhex(v["signing_seed"]), bytes.fromhex(v["exchange_seed"])
        )
        for v in VECTORS["identities"]
    }


def test_frame_fields():
    vector = VECTORS["frame_fields"]
    assert frame_fields(*vector["fields"]).hex() == vector["encoded"]


def test_identities(keys):
    for vector in VECTORS["identities"]:
        public = keys[vector["site"]].public()
        assert public.signing_public.hex() == vector["signing_public"]
        assert public.exchange_public.hex() == vector["exchange_public"]
        assert public.fingerprint == vector["fingerprint"]


def test_ed25519_signature(keys):
    vector = VECTORS["signature"]
    signer = keys[vector["signer"]]
    assert signer.sign(bytes.fromhex(vector["message"])).hex() == vector["signature"]
    signer.public().verify(bytes.fromhex(vector["signature"]), bytes.fromhex(vector["message"]))


def test_pairwise_secrets_seeds_and_first_masks(keys):
    masks = VECTORS["masks"]
    for pair in masks["pairs"]:
        low, high = keys[pair["low"]], keys[pair["high"]]
        secret = pairwise_secret(low, high.public())
        assert secret == pairwise_secret(high, low.public())
        assert secret.hex() == pair["pairwise_secret"]
        seed = mask_seed(
            secret,
            run_id=masks["run_id"],
            round_index=masks["round"],
            attempt=masks["attempt"],
            participants=masks["participants"],
        )
        assert seed.hex() == pair["mask_seed"]
        values = mask_values(seed, masks["count"], masks["scale"])
        assert [float(v).hex() for v in values] == pair["first_mask_values"]


def test_client_masks_and_their_cancellation(keys):
    masks = VECTORS["masks"]
    total = [0.0] * masks["count"]
    for site, expected in masks["client_masks"].items():
        secrets = {peer: pairwise_secret(keys[site], k.public()) for peer, k in keys.items() if peer != site}
        values = client_mask(
            site,
            secrets,
            run_id=masks["run_id"],
            round_index=masks["round"],
            attempt=masks["attempt"],
            participants=masks["participants"],
            count=masks["count"],
            scale=masks["scale"],
        )
        assert [float(v).hex() for v in values] == expected
        total = [a + b for a, b in zip(total, values, strict=True)]
    assert max(abs(v) for v in total) < 1e-9


def test_key_wrap(keys):
    vector = VECTORS["key_wrap"]
    sender, recipient = keys[vector["sender"]], keys[vector["recipient"]]
    wrapped = wrap_secret(
        sender,
        recipient.public(),
        bytes.fromhex(vector["plaintext"]),
        run_id=vector["run_id"],
        purpose=vector["purpose"],
        ephemeral=X25519PrivateKey.from_private_bytes(bytes.fromhex(vector["ephemeral_seed"])),
        nonce=bytes.fromhex(vector["nonce"]),
    )
    assert wrapped.hex() == vector["wrapped"]
    opened = unwrap_secret(
        recipient, sender.public(), bytes.fromhex(vector["wrapped"]), run_id=vector["run_id"], purpose=vector["purpose"]
    )
    assert opened.hex() == vector["plaintext"]
