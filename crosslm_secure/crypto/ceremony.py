"""Key ceremony: one client (the dealer) makes the CKKS keys and shares them with clients only.

Steps (see protocols/key-ceremony.md):

1. The dealer calls ``deal_context``: a fresh secret ``ScoreContext``, a signed
   ``ContextAnnouncement`` (run id, preset, public-context fingerprint), the public context
   for the server, and one key-wrap per other enrolled client.
2. The server relays the announcement and each wrap; it can open none of them.
3. Each client calls ``accept_secret_context``; the server calls ``accept_public_context``.
   Both check the dealer's signature and that the fingerprint matches the announcement.

Key wrap layout: ``b"CLMW" | u8 version | 32-byte ephemeral X25519 public | 12-byte nonce
| AES-256-GCM ciphertext+tag | 64-byte Ed25519 signature``. The AES key is
HKDF-SHA256(X25519(ephemeral, recipient), salt = ephemeral_pub || recipient_pub, info = AD)
and the associated data AD binds purpose, run id, sender, recipient and ephemeral key, so a
wrap replayed to another run, recipient or purpose fails to open. The sender signs
AD || sha256(body) so only an enrolled sender can hand out keys.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crosslm_secure.crypto.ckks import DEFAULT_PRESET, ScoreContext
from crosslm_secure.crypto.keys import ParticipantKeys, PublicIdentity, Registry, frame_fields
from crosslm_secure.crypto.storage import load_secret, save_secret, write_secret_file
from crosslm_secure.errors import CryptoError

CONTEXT_PURPOSE = "ckks-secret-context"
MAX_WRAP_BYTES = 16 * 1024 * 1024
_WRAP_MAGIC = b"CLMW"
_VERSION = 1
_SIGNATURE = 64
_HEADER = 4 + 1 + 32 + 12


def wrap_secret(
    sender: ParticipantKeys,
    recipient: PublicIdentity,
    plaintext: bytes,
    *,
    run_id: str,
    purpose: str = CONTEXT_PURPOSE,
    ephemeral: X25519PrivateKey | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt ``plaintext`` so only ``recipient`` can open it, signed by ``sender``.

    Args:
        ephemeral, nonce: fixed values for test vectors only; leave unset otherwise.
    """
    ephemeral = ephemeral or X25519PrivateKey.generate()
    nonce = nonce or secrets.token_bytes(12)
    ephemeral_public = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient.exchange_public))
    ad = _associated_data(purpose, run_id, sender.site, recipient.site, ephemeral_public)
    key = _wrap_key(shared, ephemeral_public, recipient.exchange_public, ad)
    body = _WRAP_MAGIC + bytes([_VERSION]) + ephemeral_public + nonce + AESGCM(key).encrypt(nonce, plaintext, ad)
    return body + sender.sign(_signed_part(ad, body))


def unwrap_secret(
    recipient: ParticipantKeys,
    sender: PublicIdentity,
    blob: bytes,
    *,
    run_id: str,
    purpose: str = CONTEXT_PURPOSE,
) -> bytes:
    """Open a wrap made by ``wrap_secret``.

    Raises:
        CryptoError: malformed or oversize blob, bad sender signature, or not for this
            recipient / run / purpose.
    """
    blob = bytes(blob)
    if len(blob) > MAX_WRAP_BYTES:
        raise CryptoError(f"key wrap: {len(blob)} bytes is oversize (limit {MAX_WRAP_BYTES})")
    if len(blob) < _HEADER + 16 + _SIGNATURE or blob[:4] != _WRAP_MAGIC or blob[4] != _VERSION:
        raise CryptoError("key wrap: blob is truncated or has no CLMW v1 header")
    body, signature = blob[:-_SIGNATURE], blob[-_SIGNATURE:]
    ephemeral_public, nonce = body[5:37], body[37:49]
    ad = _associated_data(purpose, run_id, sender.site, recipient.site, ephemeral_public)
    sender.verify(signature, _signed_part(ad, body))
    try:
        shared = recipient.exchange_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        key = _wrap_key(shared, ephemeral_public, recipient.public().exchange_public, ad)
        return AESGCM(key).decrypt(nonce, body[_HEADER:], ad)
    except (InvalidTag, ValueError):
        raise CryptoError(
            f"key wrap: cannot be opened by {recipient.site}; it was made for another recipient, run or purpose"
        ) from None


@dataclass(frozen=True)
class ContextAnnouncement:
    """The dealer's signed statement of which CKKS context a run uses."""

    run_id: str
    dealer: str
    preset: str
    fingerprint: str
    signature: bytes = b""

    def signed_message(self) -> bytes:
        return frame_fields("crosslm-context-v1", self.run_id, self.dealer, self.preset, self.fingerprint)

    def to_bytes(self) -> bytes:
        fields = {
            "run_id": self.run_id,
            "dealer": self.dealer,
            "preset": self.preset,
            "fingerprint": self.fingerprint,
            "signature": self.signature.hex(),
        }
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ContextAnnouncement:
        if len(blob) > 4096:
            raise CryptoError("context announcement: oversize")
        try:
            raw = json.loads(blob)
            return cls(
                run_id=str(raw["run_id"]),
                dealer=str(raw["dealer"]),
                preset=str(raw["preset"]),
                fingerprint=str(raw["fingerprint"]),
                signature=bytes.fromhex(raw["signature"]),
            )
        except (ValueError, KeyError, TypeError, RecursionError):
            raise CryptoError("context announcement: malformed; expected the dealer's signed JSON") from None

    def verify(self, registry: Registry, *, run_id: str) -> None:
        """Check run id, that the dealer is an enrolled client, and its signature."""
        if self.run_id != run_id:
            raise CryptoError(f"context announcement: for run {self.run_id!r}, not {run_id!r}; it is replayed")
        dealer = registry.get(self.dealer)
        if dealer.role != "client":
            raise CryptoError(f"context announcement: dealer {self.dealer} is not a client; only clients make keys")
        dealer.verify(self.signature, self.signed_message())


@dataclass(frozen=True)
class DealerOutput:
    """What ``deal_context`` produces. Only ``secret_context`` stays on the dealer."""

    secret_context: ScoreContext
    announcement: bytes
    public_context: bytes
    wrapped: dict[str, bytes]


def deal_context(
    dealer: ParticipantKeys, registry: Registry, *, run_id: str, preset: str = DEFAULT_PRESET
) -> DealerOutput:
    """Dealer side: make the run's CKKS keys and wrap the secret context for every other client.

    Raises:
        CryptoError: the dealer is not an enrolled client or its registry entry differs.
    """
    if registry.get(dealer.site) != dealer.public() or dealer.role != "client":
        raise CryptoError(f"ceremony: dealer {dealer.site} must be an enrolled client whose keys match the registry")
    context = ScoreContext.create(preset)
    unsigned = ContextAnnouncement(run_id, dealer.site, context.preset.name, context.fingerprint)
    announcement = ContextAnnouncement(
        run_id, dealer.site, context.preset.name, context.fingerprint, dealer.sign(unsigned.signed_message())
    )
    secret_blob = context.to_bytes()
    wrapped = {
        peer.site: wrap_secret(dealer, peer, secret_blob, run_id=run_id)
        for peer in registry.clients()
        if peer.site != dealer.site
    }
    return DealerOutput(context, announcement.to_bytes(), context.public().to_bytes(), wrapped)


def accept_secret_context(
    keys: ParticipantKeys, registry: Registry, *, announcement: bytes, wrapped: bytes, run_id: str
) -> ScoreContext:
    """Client side: open the dealer's wrap and check it against the signed announcement.

    Raises:
        CryptoError: bad announcement, wrap not for this client, not a secret context, or
            a fingerprint that differs from the announcement.
    """
    notice = ContextAnnouncement.from_bytes(announcement)
    notice.verify(registry, run_id=run_id)
    blob = unwrap_secret(keys, registry.get(notice.dealer), wrapped, run_id=run_id)
    context = ScoreContext.from_bytes(blob, expected_fingerprint=notice.fingerprint)
    if context.is_public:
        raise CryptoError("ceremony: the dealer sent a public context; clients need the secret one")
    return context


def accept_public_context(
    registry: Registry, *, announcement: bytes, public_context: bytes, run_id: str
) -> ScoreContext:
    """Server side: load the public context and check it against the signed announcement.

    Raises:
        CryptoError: bad announcement, a context with a secret key or Galois keys, or a
            fingerprint that differs from the announcement.
    """
    notice = ContextAnnouncement.from_bytes(announcement)
    notice.verify(registry, run_id=run_id)
    context = ScoreContext.from_bytes(public_context, expected_fingerprint=notice.fingerprint)
    if not context.is_public:
        raise CryptoError("ceremony: refusing a context that holds a secret key; the server must never have one")
    return context


def save_context(context: ScoreContext, path: str | Path, passphrase: str | None = None) -> Path:
    """Write a context: secret ones 0600 and sealed under ``passphrase`` when given."""
    if context.is_public:
        return write_secret_file(path, context.to_bytes())
    return save_secret(path, context.to_bytes(), passphrase)


def load_context(path: str | Path, passphrase: str | None = None, *, fingerprint: str | None = None) -> ScoreContext:
    """Read a context written by ``save_context``, optionally checking its fingerprint."""
    return ScoreContext.from_bytes(load_secret(path, passphrase), expected_fingerprint=fingerprint)


def _associated_data(purpose: str, run_id: str, sender: str, recipient: str, ephemeral_public: bytes) -> bytes:
    return frame_fields("crosslm-keywrap-v1", purpose, run_id, sender, recipient, ephemeral_public)


def _wrap_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes, ad: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_public + recipient_public, info=ad).derive(shared)


def _signed_part(ad: bytes, body: bytes) -> bytes:
    return frame_fields("crosslm-keywrap-sig-v1", ad, hashlib.sha256(body).digest())
