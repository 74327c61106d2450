"""Participant identities: an Ed25519 signing key and an X25519 exchange key per site.

Private keys stay on their owner (``save_participant_keys`` writes PKCS#8 PEM files mode
0600, encrypted with the passphrase when one is set). Public halves go into a JSON
``Registry``; each entry has a fingerprint that people compare out of band before trusting it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crosslm_secure.crypto.storage import (
    SCRYPT_LOG2_N,
    check_passphrase,
    is_sealed,
    read_secret_file,
    seal,
    unseal,
    write_secret_file,
)
from crosslm_secure.errors import CryptoError

Role = Literal["client", "server"]
SIGNING_KEY_FILE = "signing.pem"
EXCHANGE_KEY_FILE = "exchange.pem"
IDENTITY_FILE = "identity.json"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def frame_fields(*fields: str | bytes | int) -> bytes:
    """Unambiguous encoding of fields for signing and AEAD associated data.

    Each field is a 1-byte type tag (s/b/i) and a 4-byte big-endian length, then its bytes,
    so ``("ab", "c")`` and ``("a", "bc")`` never encode alike.
    """
    out = bytearray()
    for field in fields:
        if isinstance(field, bool) or not isinstance(field, str | bytes | int):
            raise TypeError(f"frame_fields takes str, bytes or int, not {type(field).__name__}")
        if isinstance(field, str):
            tag, body = b"s", field.encode("utf-8")
        elif isinstance(field, bytes):
            tag, body = b"b", field
        else:
            tag, body = b"i", field.to_bytes(8, "big", signed=True)
        out += tag + len(body).to_bytes(4, "big") + body
    return bytes(out)


@dataclass(frozen=True)
class PublicIdentity:
    """The public half of a participant: what the registry stores and everyone may read."""

    site: str
    role: Role
    signing_public: bytes
    exchange_public: bytes

    @property
    def fingerprint(self) -> str:
        """sha256 over site, role and both public keys, as 16 groups of 4 hex digits."""
        digest = hashlib.sha256(
            frame_fields("crosslm-identity-v1", self.site, self.role, self.signing_public, self.exchange_public)
        ).hexdigest()
        return ":".join(digest[i : i + 4] for i in range(0, 64, 4))

    def verify(self, signature: bytes, message: bytes) -> None:
        """Check an Ed25519 signature by this participant.

        Raises:
            CryptoError: the signature does not verify.
        """
        try:
            Ed25519PublicKey.from_public_bytes(self.signing_public).verify(signature, message)
        except (InvalidSignature, ValueError):
            raise CryptoError(
                f"signature: does not verify as {self.site}'s; the message was forged or altered"
            ) from None

    def to_dict(self) -> dict[str, str]:
        return {
            "site": self.site,
            "role": self.role,
            "signing_public": self.signing_public.hex(),
            "exchange_public": self.exchange_public.hex(),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, str]) -> PublicIdentity:
        """Parse a registry entry; refuses wrong key sizes and a stale fingerprint."""
        try:
            identity = cls(
                site=str(raw["site"]),
                role=raw["role"],  # type: ignore[arg-type]
                signing_public=bytes.fromhex(raw["signing_public"]),
                exchange_public=bytes.fromhex(raw["exchange_public"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise CryptoError(
                f"registry: identity entry is malformed ({exc}); re-export it with `crosslm keys init`"
            ) from None
        if identity.role not in ("client", "server"):
            raise CryptoError(f"registry: {identity.site} has role {identity.role!r}; use client or server")
        if len(identity.signing_public) != 32 or len(identity.exchange_public) != 32:
            raise CryptoError(f"registry: {identity.site}'s public keys must be 32 bytes each")
        if "fingerprint" in raw and raw["fingerprint"] != identity.fingerprint:
            raise CryptoError(f"registry: {identity.site}'s fingerprint does not match its keys; the entry was altered")
        return identity


@dataclass(frozen=True)
class ParticipantKeys:
    """A participant's private keys. Lives only on its owner; never logged (repr hides keys)."""

    site: str
    role: Role
    signing_key: Ed25519PrivateKey
    exchange_key: X25519PrivateKey

    @classmethod
    def generate(cls, site: str, role: Role = "client") -> ParticipantKeys:
        check_site_name(site)
        return cls(site, role, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @classmethod
    def from_seeds(cls, site: str, role: Role, signing_seed: bytes, exchange_seed: bytes) -> ParticipantKeys:
        """Keys from fixed 32-byte private values (test vectors only)."""
        return cls(
            site,
            role,
            Ed25519PrivateKey.from_private_bytes(signing_seed),
            X25519PrivateKey.from_private_bytes(exchange_seed),
        )

    def public(self) -> PublicIdentity:
        return PublicIdentity(
            self.site,
            self.role,
            self.signing_key.public_key().public_bytes(*_RAW),
            self.exchange_key.public_key().public_bytes(*_RAW),
        )

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message)

    def __repr__(self) -> str:
        return f"ParticipantKeys(site={self.site!r}, role={self.role!r}, <private keys hidden>)"


class Registry:
    """Enrolled public identities by site; the trust root for signatures and key exchange."""

    def __init__(self, identities: Iterable[PublicIdentity] = ()) -> None:
        self._by_site: dict[str, PublicIdentity] = {}
        for identity in identities:
            self.enroll(identity)

    def enroll(self, identity: PublicIdentity) -> None:
        """Add an identity; re-enrolling the same keys is a no-op.

        Raises:
            CryptoError: the site is already enrolled with different keys.
        """
        known = self._by_site.get(identity.site)
        if known is not None and known != identity:
            raise CryptoError(
                f"registry: {identity.site} is already enrolled with fingerprint {known.fingerprint}; "
                "remove it first if its keys were rotated"
            )
        self._by_site[identity.site] = identity

    def remove(self, site: str) -> PublicIdentity:
        """Take ``site`` out (its keys were lost or rotated); return the identity removed.

        Raises:
            CryptoError: ``site`` is not enrolled.
        """
        identity = self.get(site)
        del self._by_site[site]
        return identity

    def get(self, site: str) -> PublicIdentity:
        """The identity of ``site``.

        Raises:
            CryptoError: unknown site (an unknown signer).
        """
        try:
            return self._by_site[site]
        except KeyError:
            raise CryptoError(f"registry: {site!r} is not enrolled; it is an unknown signer") from None

    def clients(self) -> list[PublicIdentity]:
        return [i for i in self if i.role == "client"]

    def __contains__(self, site: object) -> bool:
        return site in self._by_site

    def __iter__(self) -> Iterator[PublicIdentity]:
        return iter(sorted(self._by_site.values(), key=lambda i: i.site))

    def __len__(self) -> int:
        return len(self._by_site)

    def to_json(self) -> str:
        return json.dumps({"version": 1, "participants": [i.to_dict() for i in self]}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Registry:
        try:
            raw = json.loads(text)
            entries = raw["participants"]
        except (ValueError, KeyError, TypeError, RecursionError):
            entries = None
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise CryptoError("registry: file is not a crosslm registry (JSON with a participants list)")
        return cls(PublicIdentity.from_dict(entry) for entry in entries)

    @classmethod
    def load(cls, path: str | Path) -> Registry:
        path = Path(path)
        if not path.is_file():
            raise CryptoError(f"registry: {path} not found; create it with `crosslm keys enroll`")
        return cls.from_json(read_json_text(path, "registry"))

    def save(self, path: str | Path) -> None:
        """Write atomically (public data, but a torn registry would lock everyone out)."""
        write_secret_file(path, self.to_json().encode())
        Path(path).chmod(0o644)


def save_participant_keys(
    keys: ParticipantKeys, folder: str | Path, passphrase: str | None = None, *, log2_n: int = SCRYPT_LOG2_N
) -> Path:
    """Write private keys (0600) and the public identity.

    With a passphrase each PKCS#8 PEM is sealed with scrypt (n = 2^log2_n, recorded in the file)
    and AES-256-GCM (:func:`crosslm_secure.crypto.storage.seal`), not PKCS#8's own PBKDF2 at
    2,048 iterations. Tests lower ``log2_n``; files record what they used.

    Raises:
        CryptoError: the passphrase is shorter than ``MIN_PASSPHRASE_CHARS``; nothing is written.
    """
    folder = Path(folder)
    if passphrase is not None:
        check_passphrase(passphrase)
    if folder.exists() and not folder.is_dir():
        raise CryptoError(f"keys: {folder} is a file; pass --out a folder (it is created when missing)")
    for name, key in ((SIGNING_KEY_FILE, keys.signing_key), (EXCHANGE_KEY_FILE, keys.exchange_key)):
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_secret_file(folder / name, pem if passphrase is None else seal(pem, passphrase, log2_n=log2_n))
    identity_path = folder / IDENTITY_FILE
    write_secret_file(identity_path, (json.dumps(keys.public().to_dict(), indent=2) + "\n").encode())
    identity_path.chmod(0o644)
    return identity_path


def load_participant_keys(folder: str | Path, passphrase: str | None = None) -> ParticipantKeys:
    """Read keys written by ``save_participant_keys``.

    Raises:
        CryptoError: files missing or too permissive, wrong passphrase, or keys that do not
            match the identity file.
    """
    folder = Path(folder)
    identity = load_identity(folder / IDENTITY_FILE)
    password = passphrase.encode() if passphrase else None
    loaded = []
    for name in (SIGNING_KEY_FILE, EXCHANGE_KEY_FILE):
        pem = read_secret_file(folder / name)
        if is_sealed(pem):
            if passphrase is None:
                raise CryptoError(f"keys: {folder / name}: pass its passphrase")
            pem = unseal(pem, passphrase)
        elif password is not None and b"ENCRYPTED" not in pem:
            raise CryptoError(f"keys: {folder / name}: it is not encrypted; omit the passphrase")
        try:
            # A PEM encrypted by PKCS#8 itself (files written before scrypt sealing) still opens with the password.
            loaded.append(serialization.load_pem_private_key(pem, password=password if b"ENCRYPTED" in pem else None))
        except TypeError:
            hint = "pass its passphrase" if password is None else "it is not encrypted; omit the passphrase"
            raise CryptoError(f"keys: {folder / name}: {hint}") from None
        except ValueError:
            raise CryptoError(f"keys: {folder / name}: wrong passphrase or corrupt key file") from None
    signing, exchange = loaded
    if not isinstance(signing, Ed25519PrivateKey) or not isinstance(exchange, X25519PrivateKey):
        raise CryptoError(f"keys: {folder} holds keys of the wrong type; expected Ed25519 and X25519")
    keys = ParticipantKeys(identity.site, identity.role, signing, exchange)
    if keys.public() != identity:
        raise CryptoError(f"keys: {folder}'s private keys do not match {IDENTITY_FILE}")
    return keys


def load_identity(path: str | Path) -> PublicIdentity:
    """Read a public identity file (``identity.json``) or a key folder holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / IDENTITY_FILE
    if not path.is_file():
        raise CryptoError(f"keys: identity file {path} not found; run `crosslm keys init`")
    try:
        raw = json.loads(read_json_text(path, "keys"))
    except (ValueError, RecursionError):
        raise CryptoError(f"keys: {path} is not JSON; it is not an identity file") from None
    if not isinstance(raw, dict):
        raise CryptoError(f"keys: {path} is not an identity file (JSON object with site, role and public keys)")
    return PublicIdentity.from_dict(raw)


def read_json_text(path: Path, what: str) -> str:
    """The text of a small JSON file.

    Raises:
        CryptoError: unreadable, over 1 MB, or not UTF-8 (a binary file given by mistake).
    """
    try:
        if path.stat().st_size > 1_000_000:
            raise CryptoError(f"{what}: {path} is over 1 MB; it is not an identity or registry file")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CryptoError(f"{what}: {path} is not UTF-8 text; pass an identity.json or registry file") from None
    except OSError as exc:
        raise CryptoError(f"{what}: cannot read {path} ({exc.strerror})") from None


def check_site_name(site: str) -> None:
    if not site or len(site) > 64 or not all(c.isalnum() or c in "-_." for c in site):
        raise CryptoError(f"keys: site name {site!r} must be 1-64 letters, digits, '-', '_' or '.'")
