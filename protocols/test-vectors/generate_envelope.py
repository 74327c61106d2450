"""Regenerate envelope.json: `python protocols/test-vectors/generate_envelope.py`.

Ed25519 signatures are deterministic, so a fixed key and header give fixed bytes.
tests/unit/protocol/test_envelope_vectors.py parses, verifies and re-seals each vector.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crosslm_secure.protocol.envelope import seal

HERE = Path(__file__).parent
SEED = hashlib.sha256(b"crosslm test vector envelope signer").digest()
CASES = [
    {
        "type": "evaluate.request",
        "run_id": "run-vector",
        "round": 0,
        "sender": "server",
        "recipient": "client-1",
        "seq": 1,
        "body": {},
        "blobs": [],
    },
    {
        "type": "score.reply",
        "run_id": "run-vector",
        "round": 2,
        "sender": "client-1",
        "recipient": "server",
        "seq": 1700000000000000000,
        "body": {"count": 3, "aggregator": "plaintext"},
        "blobs": ["000000000000e03f9a9999999999b93f0000000000000000"],
    },
]


def build() -> dict:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    vectors = []
    for case in CASES:
        message = seal(
            key, **{k: v for k, v in case.items() if k != "blobs"}, blobs=[bytes.fromhex(b) for b in case["blobs"]]
        )
        vectors.append({**case, "message": message.hex()})
    public = key.public_key().public_bytes_raw().hex()
    return {
        "description": "wire envelope v1 vectors; signer seed = sha256('crosslm test vector envelope signer')",
        "signer_seed": SEED.hex(),
        "signer_public": public,
        "vectors": vectors,
    }


if __name__ == "__main__":
    (HERE / "envelope.json").write_text(json.dumps(build(), indent=2) + "\n")
