"""Signed JSON documents: a body, who signed it, and an Ed25519 signature over its canonical form.

What a party hands to another party outside the protocol's envelopes (a site's audit result,
the coordinator's seal over its run folder) is one of these, so the reviewer can check it
against keys it pinned out of band, not against keys written beside the document.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from crosslm_secure.crypto.keys import ParticipantKeys, Registry, frame_fields
from crosslm_secure.errors import CryptoError

SCHEMA = "crosslm-signed/1"
_DOMAIN = "crosslm-signed-document-v1"


def canonical_digest(body: dict[str, Any]) -> str:
    """sha256 of the body as canonical JSON (sorted keys, no spaces, no NaN)."""
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except ValueError:
        raise CryptoError("signed document: the body holds NaN or infinity; write them as null or a string") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _message(kind: str, signer: str, digest: str) -> bytes:
    return frame_fields(_DOMAIN, kind, signer, digest)


def sign_document(keys: ParticipantKeys, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """Wrap ``body`` as a document of ``kind`` signed by ``keys``."""
    digest = canonical_digest(body)
    return {
        "schema": SCHEMA,
        "kind": kind,
        "signer": keys.site,
        "body": body,
        "sha256": digest,
        "signature": keys.sign(_message(kind, keys.site, digest)).hex(),
    }


def verify_document(document: Any, kind: str, registry: Registry, *, where: str = "document") -> dict[str, Any]:
    """The body of a signed document, checked against ``registry``.

    Args:
        document: the parsed JSON.
        kind: the kind it must be (a site audit is never accepted as a seal).
        registry: the identities the checker trusts.
        where: how to name the document in an error (usually its path).

    Raises:
        CryptoError: not a signed document, of another kind, by a signer the registry does not
            hold, or a signature that does not verify.
    """
    if not isinstance(document, dict) or document.get("schema") != SCHEMA or not isinstance(document.get("body"), dict):
        raise CryptoError(f"{where}: not a signed crosslm document ({SCHEMA}); it was not written by crosslm")
    if document.get("kind") != kind:
        raise CryptoError(f"{where}: is a {document.get('kind')!r} document, not {kind!r}; pass the right file")
    signer = document.get("signer")
    if not isinstance(signer, str) or signer not in registry:
        raise CryptoError(
            f"{where}: signed by {signer!r}, who is not in the registry; enrol that party's key "
            "(fingerprint compared out of band) or reject the file"
        )
    try:
        signature = bytes.fromhex(str(document.get("signature", "")))
    except ValueError:
        signature = b""
    digest = canonical_digest(document["body"])
    try:
        registry.get(signer).verify(signature, _message(kind, signer, digest))
    except CryptoError:
        raise CryptoError(
            f"{where}: the signature does not verify as {signer}'s registered key; the file was altered "
            "or signed by another key"
        ) from None
    return document["body"]
