"""Secret files at rest: written atomically with mode 0600, sealed when a passphrase is set.

Sealed layout (version 2): ``b"CLMP" | u8 2 | u8 log2(n) | 16-byte salt | 12-byte nonce |
AES-256-GCM(body)`` with the key from scrypt(passphrase, salt, n, r=8, p=1) and everything before
the nonce as associated data, so a tampered header (or a lowered cost) fails like a wrong
passphrase. The file records its scrypt cost; the default is n=2^17 (128 MiB, OWASP's scrypt
setting). Version 1 files (no cost byte, n=2^15) still open.

A passphrase must have at least ``MIN_PASSPHRASE_CHARS`` characters.
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
_VERSION = 2
_SALT = 16
_NONCE = 12
_V1_LOG2_N = 15
SCRYPT_LOG2_N = 17
"""Default scrypt cost: n = 2^17, r = 8 takes 128 MiB and about half a second per derivation."""
MIN_SCRYPT_LOG2_N = 10
MIN_PASSPHRASE_CHARS = 12


def check_passphrase(passphrase: str) -> None:
    """Refuse a passphrase too short to resist guessing, whatever the KDF's cost.

    Raises:
        CryptoError: fewer than ``MIN_PASSPHRASE_CHARS`` characters.
    """
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise CryptoError(
            f"keys: the passphrase has {len(passphrase)} characters; use at least {MIN_PASSPHRASE_CHARS} "
            "(several random words), or none at all"
        )


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


def seal(data: bytes, passphrase: str, *, log2_n: int = SCRYPT_LOG2_N) -> bytes:
    """Encrypt ``data`` under ``passphrase`` (scrypt with n = 2^log2_n, then AES-256-GCM).

    Raises:
        CryptoError: the passphrase is too short, or the cost is outside 2^10..2^20.
    """
    check_passphrase(passphrase)
    if not MIN_SCRYPT_LOG2_N <= log2_n <= 20:
        raise CryptoError(f"keys: scrypt cost 2^{log2_n} is outside 2^{MIN_SCRYPT_LOG2_N}..2^20")
    salt, nonce = secrets.token_bytes(_SALT), secrets.token_bytes(_NONCE)
    header = _MAGIC + bytes([_VERSION, log2_n]) + salt
    return header + nonce + AESGCM(_derive(passphrase, salt, log2_n)).encrypt(nonce, data, header)


def unseal(blob: bytes, passphrase: str | None) -> bytes:
    """Decrypt a blob made by ``seal``.

    Raises:
        CryptoError: no passphrase given, wrong passphrase, or tampered blob.
    """
    version = blob[4] if len(blob) > 4 else None
    prefix = {1: 5, _VERSION: 6}.get(version or 0)
    if not is_sealed(blob) or prefix is None or len(blob) < prefix + _SALT + _NONCE + 16:
        raise CryptoError("keys: sealed secret is malformed or of an unknown version")
    log2_n = _V1_LOG2_N if version == 1 else blob[5]
    if not MIN_SCRYPT_LOG2_N <= log2_n <= 20:
        raise CryptoError(f"keys: sealed secret names scrypt cost 2^{log2_n}, outside 2^{MIN_SCRYPT_LOG2_N}..2^20")
    if not passphrase:
        raise CryptoError("keys: this secret is encrypted at rest; pass its passphrase (--passphrase-env)")
    header = blob[: prefix + _SALT]
    nonce = blob[prefix + _SALT : prefix + _SALT + _NONCE]
    try:
        return AESGCM(_derive(passphrase, header[prefix:], log2_n)).decrypt(
            nonce, blob[prefix + _SALT + _NONCE :], header
        )
    except InvalidTag:
        raise CryptoError("keys: wrong passphrase, or the secret file was tampered with") from None


def save_secret(path: str | Path, data: bytes, passphrase: str | None = None, *, log2_n: int = SCRYPT_LOG2_N) -> Path:
    """Write a secret 0600, sealed when ``passphrase`` is given."""
    return write_secret_file(path, seal(data, passphrase, log2_n=log2_n) if passphrase is not None else data)


def load_secret(path: str | Path, passphrase: str | None = None) -> bytes:
    """Read a secret written by ``save_secret``; unseals when it is sealed."""
    blob = read_secret_file(path)
    return unseal(blob, passphrase) if is_sealed(blob) else blob


def _derive(passphrase: str, salt: bytes, log2_n: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**log2_n, r=8, p=1).derive(passphrase.encode("utf-8"))
