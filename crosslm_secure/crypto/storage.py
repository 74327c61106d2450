"""Secret files at rest: written atomically with mode 0600, sealed when a passphrase is set.

Sealed layout: ``b"CLMP" | u8 version | 16-byte salt | 12-byte nonce | AES-256-GCM(body)``
with the key from scrypt(passphrase, salt, n=2^15, r=8, p=1) and the magic+version+salt as
associated data, so a tampered header fails like a wrong passphrase.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from crosslm_secure.errors import CryptoError
from crosslm_secure.storage import atomic_write_bytes

SECRET_FILE_MODE = 0o600
_MAGIC = b"CLMP"
_VERSION = 1
_SALT = 16
_NONCE = 12
_SCRYPT_N = 2**15


def write_secret_file(path: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path`` with mode 0600 (never world- or group-readable).

    The temporary file is created 0600 in the target folder, fsynced, then renamed over the
    target, so a crash leaves either the old file or the new one, never a partial secret.
    """
    path = Path(path)
    atomic_write_bytes(path, data, mode=SECRET_FILE_MODE)
    return path


def read_secret_file(path: str | Path) -> bytes:
    """Read a secret file, refusing one that others can read.

    Raises:
        CryptoError: missing, or its mode grants group/other access.
    """
    path = Path(path)
    if not path.is_file():
        raise CryptoError(f"keys: secret file {path} not found; run `crosslm keys init` first")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise CryptoError(f"keys: secret file {path} has mode {mode:o}; run `chmod 600 {path}`")
    return path.read_bytes()


def is_sealed(blob: bytes) -> bool:
    return blob[:4] == _MAGIC


def seal(data: bytes, passphrase: str) -> bytes:
    """Encrypt ``data`` under ``passphrase`` (scrypt + AES-256-GCM)."""
    if not passphrase:
        raise CryptoError("keys: passphrase is empty; set a non-empty passphrase or none at all")
    salt, nonce = secrets.token_bytes(_SALT), secrets.token_bytes(_NONCE)
    header = _MAGIC + bytes([_VERSION]) + salt
    return header + nonce + AESGCM(_derive(passphrase, salt)).encrypt(nonce, data, header)


def unseal(blob: bytes, passphrase: str | None) -> bytes:
    """Decrypt a blob made by ``seal``.

    Raises:
        CryptoError: no passphrase given, wrong passphrase, or tampered blob.
    """
    if not is_sealed(blob) or len(blob) < 5 + _SALT + _NONCE + 16 or blob[4] != _VERSION:
        raise CryptoError("keys: sealed secret is malformed or of an unknown version")
    if not passphrase:
        raise CryptoError("keys: this secret is encrypted at rest; pass its passphrase (--passphrase-env)")
    header, nonce = blob[: 5 + _SALT], blob[5 + _SALT : 5 + _SALT + _NONCE]
    try:
        return AESGCM(_derive(passphrase, header[5:])).decrypt(nonce, blob[5 + _SALT + _NONCE :], header)
    except InvalidTag:
        raise CryptoError("keys: wrong passphrase, or the secret file was tampered with") from None


def save_secret(path: str | Path, data: bytes, passphrase: str | None = None) -> Path:
    """Write a secret 0600, sealed when ``passphrase`` is given."""
    return write_secret_file(path, seal(data, passphrase) if passphrase else data)


def load_secret(path: str | Path, passphrase: str | None = None) -> bytes:
    """Read a secret written by ``save_secret``; unseals when it is sealed."""
    blob = read_secret_file(path)
    return unseal(blob, passphrase) if is_sealed(blob) else blob


def _derive(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=8, p=1).derive(passphrase.encode("utf-8"))
