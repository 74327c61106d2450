"""Secret material in a file's bytes, found by format rather than by keyword.

Used by the protocol audit on every server artefact: a secret TenSEAL/crosslm CKKS context
(``CLMC`` framing or a bare TenSEAL context), PEM and PKCS#8 DER private keys, passphrase-
sealed secret files (``CLMP``, crypto/storage.py), our key-file names, bare 32-byte keys and
JSON fields named like private keys; text is also searched for long base64 (standard or
URL-safe, also wrapped at any width) and hex runs (also spaced or colon-separated), and
gzip, bz2 and zip containers are opened; what they hold is scanned again.

This is the second layer: the allowlist (audit/artefact_checks.py) already refuses any file
that is not a declared kind. XOR-ed or split secrets are only caught by the allowlist.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import gzip
import io
import json
import re
import zipfile
from collections.abc import Iterable
from typing import Any

import tenseal as ts
from cryptography.hazmat.primitives import serialization

from crosslm_secure.crypto.keys import EXCHANGE_KEY_FILE, SIGNING_KEY_FILE

_PEM_PRIVATE = re.compile(rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----")
_PKCS8_PREFIXES = {
    "Ed25519": bytes.fromhex("302e020100300506032b657004220420"),
    "X25519": bytes.fromhex("302e020100300506032b656e04220420"),
}
_CONTEXT_MAGIC = b"CLMC\x01"
_SEALED_MAGICS = (b"CLMP\x01", b"CLMP\x02")  # crypto/storage.py versions 1 (n=2^15) and 2 (cost recorded)
_BASE64_RUN = re.compile(
    rb"(?:^[ \t]*[A-Za-z0-9+/_-]{16,}={0,2}[ \t]*\r?\n){2,}(?:[ \t]*[A-Za-z0-9+/_-]+={0,2})?"
    rb"|[A-Za-z0-9+/_-]{64,}={0,2}",
    re.M,
)
"""One long run, or whole lines of base64 (wrapped at any width, as PEM and encodebytes do)."""
_MIN_ENCODED = 64
_HEX_RUN = re.compile(rb"(?:[0-9a-fA-F]{2}[ \t\r\n:]?){128,}")
_MAX_DEPTH = 3
_MAX_INFLATED = 64 * 1024 * 1024
_PREFIX_PROBE = 4
"""A bare TenSEAL context is also looked for behind a prefix of up to this many bytes."""
_KEY_NAME = re.compile(r"(private|secret)[_-]?key|signing[_-]?key|exchange[_-]?key|secret[_-]?context", re.I)
_MAX_TENSEAL_PROBE = 256 * 1024 * 1024


def scan_bytes(data: bytes, *, file_name: str = "", depth: int = 0) -> tuple[list[str], str]:
    """Secret material in one file's bytes: (one line per problem, what the file is).

    Looks for a secret TenSEAL/crosslm CKKS context, PEM and PKCS#8 DER private keys, our
    passphrase-sealed files, our key-file names, bare 32-byte keys and private-key JSON
    fields; text is also searched for base64/hex runs, which are decoded and scanned again.
    """
    problems: list[str] = []
    kind = "-"
    if depth == 0 and file_name in (SIGNING_KEY_FILE, EXCHANGE_KEY_FILE):
        problems.append(f"is named like a participant's private key file ({file_name})")
    if depth == 0 and len(data) == 32:
        problems.append("is a bare 32-byte file, the size of a raw Ed25519/X25519 private key")
    if data.startswith(_SEALED_MAGICS):
        problems.append("is a passphrase-sealed secret file (CLMP, crypto/storage.py)")
        kind = "sealed secret"
    for match in _PEM_PRIVATE.finditer(data):
        label = (match.group(1).decode() + "PRIVATE KEY").strip()
        problems.append(f"contains a PEM {label} at byte {match.start()}")
        kind = "PEM private key"
    for algorithm, prefix in _PKCS8_PREFIXES.items():
        at = data.find(prefix)
        if at >= 0:
            problems.append(f"contains a PKCS#8 DER {algorithm} private key at byte {at}")
            kind = "DER private key"
    if data[:1] == b"\x30" and len(data) < 16 * 1024 and not problems:
        problems += _der_private_key(data)
    context_problems, context_kind = _tenseal_contexts(data)
    problems += context_problems
    kind = context_kind or kind
    if depth < _MAX_DEPTH and _looks_textual(data):
        kind = "text" if kind == "-" else kind
        if depth == 0:
            problems += _json_key_fields(data)
        for decoded, how in [*_encoded_runs(data), *_encoded_json_strings(data)]:
            inner, _ = scan_bytes(decoded, depth=depth + 1)
            problems += [f"{problem} (inside a {how} string)" for problem in inner]
    if depth < _MAX_DEPTH:
        for inflated, how in _containers(data):
            if inflated is None:  # nothing to scan is not the same as nothing found
                problems.append(f"holds {how} that cannot be opened (corrupt or encrypted), so it cannot be scanned")
                continue
            inner, _ = scan_bytes(inflated, depth=depth + 1)
            problems += [f"{problem} (inside {how})" for problem in inner]
    return problems, kind


def _containers(data: bytes) -> Iterable[tuple[bytes | None, str]]:
    """What gzip, bz2 and zip data hold (bounded, so a decompression bomb cannot stall the audit);
    ``None`` for a container that cannot be opened (corrupt, truncated or encrypted)."""
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
                inflated = handle.read(_MAX_INFLATED)
        except (OSError, EOFError):
            inflated = None
        yield inflated, "gzip data"
    if data[:3] == b"BZh":
        try:
            inflated = bz2.BZ2Decompressor().decompress(data, _MAX_INFLATED)
        except (OSError, ValueError, EOFError):
            inflated = None
        yield inflated, "bz2 data"
    if data[:4] == b"PK\x03\x04":
        yield from _zip_members(data)


def _zip_members(data: bytes) -> Iterable[tuple[bytes | None, str]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        yield None, "a zip archive"
        return
    with archive:
        for info in archive.infolist()[:256]:
            try:
                with archive.open(info) as member:
                    inflated = member.read(_MAX_INFLATED)
            except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError):  # RuntimeError: encrypted
                inflated = None
            yield inflated, f"zip member {info.filename!r}"


def _der_private_key(data: bytes) -> list[str]:
    try:
        serialization.load_der_private_key(data, password=None)
    except TypeError:
        return ["is an encrypted DER private key"]
    except (ValueError, Exception):  # noqa: BLE001 - any parse failure means "not a key"
        return []
    return ["is a DER private key"]


def _tenseal_contexts(data: bytes) -> tuple[list[str], str | None]:
    problems: list[str] = []
    kind: str | None = None
    start = data.find(_CONTEXT_MAGIC)
    while start >= 0:
        flag_at = start + 6 + (data[start + 5] if len(data) > start + 5 else 0)
        if flag_at < len(data) and data[flag_at] == 1:
            problems.append(f"contains a crosslm CKKS context flagged SECRET at byte {start}")
        parsed = _tenseal_context(data[flag_at + 1 :]) if flag_at < len(data) else None
        if parsed is not None:
            kind = "CKKS context (secret)" if parsed.has_secret_key() else "CKKS context (public)"
            if parsed.has_secret_key() and data[flag_at] != 1:
                problems.append(
                    f"contains a crosslm CKKS context at byte {start} whose TenSEAL body holds a SECRET key"
                )
        start = data.find(_CONTEXT_MAGIC, start + 1)
    if kind is None and not data.startswith(_CONTEXT_MAGIC):
        for skip in range(_PREFIX_PROBE + 1):
            parsed = _tenseal_context(data[skip:])
            if parsed is None:
                continue
            kind = "bare TenSEAL context"
            if parsed.has_secret_key():
                where = f" behind a {skip}-byte prefix" if skip else ""
                problems.append(f"is a bare TenSEAL context holding a SECRET key{where}")
            break
    return problems, kind


def _tenseal_context(blob: bytes) -> ts.Context | None:
    if not blob or len(blob) > _MAX_TENSEAL_PROBE or _looks_textual(blob[:4096]):
        return None
    try:
        return ts.context_from(blob)
    except Exception:  # noqa: BLE001 - TenSEAL raises ValueError/RuntimeError for non-contexts
        return None


def _looks_textual(data: bytes) -> bool:
    sample = data[:4096]
    if not sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in sample


def _encoded_runs(data: bytes) -> Iterable[tuple[bytes, str]]:
    for match in _HEX_RUN.finditer(data):
        run = re.sub(rb"[^0-9a-fA-F]", b"", match.group(0))
        try:
            yield binascii.unhexlify(run[: len(run) // 2 * 2]), "hex"
        except binascii.Error:
            continue
    for match in _BASE64_RUN.finditer(data):
        run = re.sub(rb"\s", b"", match.group(0))
        if len(run) < _MIN_ENCODED or re.fullmatch(rb"[0-9a-fA-F]+", run):
            continue
        run = run.rstrip(b"=")
        try:
            yield base64.b64decode(run + b"=" * (-len(run) % 4), altchars=b"-_"), "base64"
        except (binascii.Error, ValueError):
            continue


def _encoded_json_strings(data: bytes) -> Iterable[tuple[bytes, str]]:
    """Encoded runs inside JSON string values, where a wrapped encoding shows as escaped newlines."""
    for document in _json_documents(data):
        for _, value in _walk(document):
            if isinstance(value, str) and len(value) >= _MIN_ENCODED and ("\n" in value or " " in value):
                yield from _encoded_runs(value.encode("utf-8", errors="replace"))


def _json_documents(data: bytes) -> list[Any]:
    text = data.decode("utf-8", errors="replace")
    try:
        return [json.loads(text)]
    except ValueError:
        pass
    documents = []
    for line in text.splitlines():
        try:
            documents.append(json.loads(line))
        except ValueError:
            continue
    return documents


def _json_key_fields(data: bytes) -> list[str]:
    problems: list[str] = []
    for document in _json_documents(data):
        for key, value in _walk(document):
            if _KEY_NAME.search(key) and isinstance(value, str) and len(value) >= 32:
                problems.append(f"has a JSON field {key!r} holding {len(value)} characters of key-like material")
    return problems


def _walk(value: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key), item
            yield from _walk(item, str(key))
    elif isinstance(value, list):
        for item in value:
            if not isinstance(item, dict | list):
                yield prefix, item
            yield from _walk(item, prefix)
