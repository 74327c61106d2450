"""Regenerate key-ceremony.json: `python protocols/test-vectors/generate.py`.

Every value derives from fixed seeds, so the file only changes when the protocol does.
tests/unit/crypto/test_protocol_vectors.py recomputes each entry and compares.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crosslm_secure.crypto.ceremony import wrap_secret
from crosslm_secure.crypto.keys import ParticipantKeys, frame_fields
from crosslm_secure.crypto.masks import client_mask, mask_seed, mask_values, pairwise_secret

SITES = ["client-1", "client-2", "client-3"]
RUN_ID, ROUND, ATTEMPT, SCALE, COUNT = "run-test-vector", 1, 0, 1024.0, 4


def seed(label: str) -> bytes:
    return hashlib.sha256(f"crosslm test vector {label}".encode()).digest()


def participants() -> list[ParticipantKeys]:
    return [ParticipantKeys.from_seeds(s, "client", seed(f"signing {s}"), seed(f"exchange {s}")) for s in SITES]


def build() -> dict:
    keys = participants()
    vectors: dict = {
        "description": "crosslm key-ceremony test vectors; seeds are sha256('crosslm test vector ' + label)",
        "frame_fields": {"fields": ["ab", "c", 7], "encoded": frame_fields("ab", "c", 7).hex()},
        "identities": [
            {
                "site": k.site,
                "role": k.role,
                "signing_seed": seed(f"signing {k.site}").hex(),
                "exchange_seed": seed(f"exchange {k.site}").hex(),
                "signing_public": k.public().signing_public.hex(),
                "exchange_public": k.public().exchange_public.hex(),
                "fingerprint": k.public().fingerprint,
            }
            for k in keys
        ],
    }
    message = b"crosslm test vector message"
    vectors["signature"] = {"signer": SITES[0], "message": message.hex(), "signature": keys[0].sign(message).hex()}
    pairs = []
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            secret = pairwise_secret(keys[i], keys[j].public())
            mseed = mask_seed(secret, run_id=RUN_ID, round_index=ROUND, attempt=ATTEMPT, participants=SITES)
            pairs.append(
                {
                    "low": SITES[i],
                    "high": SITES[j],
                    "pairwise_secret": secret.hex(),
                    "mask_seed": mseed.hex(),
                    "first_mask_values": [float(v).hex() for v in mask_values(mseed, COUNT, SCALE)],
                }
            )
    secrets_by_site = {k.site: {p.site: pairwise_secret(k, p.public()) for p in keys if p.site != k.site} for k in keys}
    vectors["masks"] = {
        "run_id": RUN_ID,
        "round": ROUND,
        "attempt": ATTEMPT,
        "participants": SITES,
        "scale": SCALE,
        "count": COUNT,
        "pairs": pairs,
        "client_masks": {
            site: [
                float(v).hex()
                for v in client_mask(
                    site,
                    secrets_by_site[site],
                    run_id=RUN_ID,
                    round_index=ROUND,
                    attempt=ATTEMPT,
                    participants=SITES,
                    count=COUNT,
                    scale=SCALE,
                )
            ]
            for site in SITES
        },
    }
    plaintext = b"crosslm test vector secret context"
    ephemeral_seed, nonce = seed("ephemeral"), seed("nonce")[:12]
    wrap = wrap_secret(
        keys[0],
        keys[1].public(),
        plaintext,
        run_id=RUN_ID,
        ephemeral=X25519PrivateKey.from_private_bytes(ephemeral_seed),
        nonce=nonce,
    )
    vectors["key_wrap"] = {
        "sender": SITES[0],
        "recipient": SITES[1],
        "run_id": RUN_ID,
        "purpose": "ckks-secret-context",
        "ephemeral_seed": ephemeral_seed.hex(),
        "nonce": nonce.hex(),
        "plaintext": plaintext.hex(),
        "wrapped": wrap.hex(),
    }
    return vectors


if __name__ == "__main__":
    out = Path(__file__).with_name("key-ceremony.json")
    out.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {out}")
