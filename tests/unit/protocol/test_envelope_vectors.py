"""The published envelope vectors parse, verify, and re-seal to the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crosslm_secure.protocol.envelope import seal, verify

VECTORS = json.loads((Path(__file__).resolve().parents[3] / "protocols" / "test-vectors" / "envelope.json").read_text())


def test_vectors_verify_and_reseal() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["signer_seed"]))
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(VECTORS["signer_public"]))
    assert len(VECTORS["vectors"]) >= 2
    for vector in VECTORS["vectors"]:
        message = bytes.fromhex(vector["message"])
        envelope = verify(message, {vector["sender"]: public})
        assert envelope.type == vector["type"]
        assert envelope.body == vector["body"]
        assert [b.hex() for b in envelope.blobs] == vector["blobs"]
        fields = {k: v for k, v in vector.items() if k not in ("blobs", "message")}
        assert seal(key, **fields, blobs=[bytes.fromhex(b) for b in vector["blobs"]]) == message
