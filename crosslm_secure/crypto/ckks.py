"""CKKS score vectors: encrypt per-sample scores, add them blind, decrypt only the sum.

Reads like TenSEAL on purpose: a ``ScoreContext`` (secret on clients, public on the
server), then ``encrypt_scores`` / ``add`` / ``decrypt_aggregate`` over bytes.

Every ciphertext blob names the fingerprint of its context (sha256 of the serialized
public context) and the number of scores it holds, so a ciphertext from a foreign context,
a truncated or padded blob, or a blob of the wrong length is refused with a sentence
instead of decrypting to garbage (TenSEAL silently decrypts a same-parameter foreign
ciphertext to noise).

Blob layouts (all integers big-endian):

* context:    ``b"CLMC" | u8 version | u8 len | preset name | u8 is_secret | TenSEAL context``
* ciphertext: ``b"CLMS" | u8 version | 32-byte fingerprint | u32 count | u16 n
  | n x (u32 len | TenSEAL CKKSVector)``
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tenseal as ts

from crosslm_secure.errors import CryptoError

SEAL_128_BIT_MAX_MODULUS = {4096: 109, 8192: 218, 16384: 438}
"""Largest total coefficient-modulus bits that keep 128-bit security (SEAL's table)."""

MAX_SCORES = 1_000_000
"""Largest score vector one blob may carry; bounds what a receiver allocates."""

_CONTEXT_MAGIC = b"CLMC"
_VECTOR_MAGIC = b"CLMS"
_VERSION = 1
_VECTOR_HEADER = struct.Struct(">4sB32sIH")
_LENGTH = struct.Struct(">I")
_CONTEXT_SLACK = 1 << 16
_CIPHERTEXT_SLACK = 4096


@dataclass(frozen=True)
class CKKSPreset:
    """CKKS parameters for score aggregation (additions only, no rescaling needed).

    Args:
        name: Short name used in configs and blobs.
        poly_modulus_degree: Ring degree N; a ciphertext packs N/2 scores.
        coeff_mod_bit_sizes: Prime sizes; the last is the key-switching prime.
        scale_bits: log2 of the encoding scale; sets precision (error ~ 2^-scale_bits * noise).
    """

    name: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def data_modulus_bits(self) -> int:
        """Bits of the modulus a fresh ciphertext lives in (all primes but the special one)."""
        bits = self.coeff_mod_bit_sizes
        return sum(bits[:-1]) if len(bits) > 1 else bits[0]

    @property
    def max_abs_value(self) -> float:
        """Largest |value| one ciphertext may encode with a 4x safety margin below q/2."""
        return float(2.0 ** (self.data_modulus_bits - self.scale_bits - 2))

    @property
    def max_ciphertext_bytes(self) -> int:
        """Upper bound on one serialized ciphertext (2 polynomials, 8 bytes per coefficient)."""
        primes = max(1, len(self.coeff_mod_bit_sizes) - 1)
        return 2 * self.poly_modulus_degree * primes * 8 + _CIPHERTEXT_SLACK

    def check_security(self) -> None:
        """Raise CryptoError unless the parameters meet 128-bit security."""
        limit = SEAL_128_BIT_MAX_MODULUS.get(self.poly_modulus_degree)
        total = sum(self.coeff_mod_bit_sizes)
        if limit is None or total > limit:
            raise CryptoError(
                f"ckks preset {self.name!r}: {total} modulus bits at N={self.poly_modulus_degree} "
                f"exceed the 128-bit security limit ({limit}); pick a preset from {sorted(PRESETS)}"
            )


PRESETS: dict[str, CKKSPreset] = {
    # 140 data bits leave room for multiplications nobody does; kept as the reviewed default.
    "n8192": CKKSPreset("n8192", 8192, (60, 40, 40, 60), 40),
    # Additions need one data prime: 60 + 49 = 109 bits is the whole 128-bit budget at N=4096,
    # and scale 2^40 keeps a sum of 10 scores within ~1e-8 (2^20 gives 1e-2, 2^30 gives 1e-5).
    "n4096": CKKSPreset("n4096", 4096, (60, 49), 40),
}
DEFAULT_PRESET = "n8192"


def get_preset(name: str) -> CKKSPreset:
    """The preset called ``name``.

    Raises:
        CryptoError: no such preset.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise CryptoError(f"ckks: unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


class ScoreContext:
    """A CKKS context for score vectors: secret (clients) or public (server).

    Galois and relinearization keys are never generated or shipped: aggregation only adds.
    """

    def __init__(self, preset: CKKSPreset, tenseal_context: ts.Context) -> None:
        self.preset = preset
        self._context = tenseal_context
        self._fingerprint: bytes | None = None

    @classmethod
    def create(cls, preset: str | CKKSPreset = DEFAULT_PRESET) -> ScoreContext:
        """Generate a fresh secret context (the dealer does this once per run)."""
        preset = get_preset(preset) if isinstance(preset, str) else preset
        preset.check_security()
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=preset.poly_modulus_degree,
            coeff_mod_bit_sizes=list(preset.coeff_mod_bit_sizes),
        )
        context.global_scale = 2.0**preset.scale_bits
        return cls(preset, context)

    @classmethod
    def from_bytes(cls, blob: bytes, *, expected_fingerprint: str | None = None) -> ScoreContext:
        """Load a context blob written by ``to_bytes``.

        Raises:
            CryptoError: the blob is malformed, of an unknown preset, or (when given)
                its fingerprint differs from ``expected_fingerprint``.
        """
        blob = bytes(blob)
        if len(blob) < 7 or blob[:4] != _CONTEXT_MAGIC or blob[4] != _VERSION:
            raise CryptoError("ckks: context blob has no CLMC v1 header; it is not a crosslm context")
        name_len = blob[5]
        if len(blob) < 7 + name_len:
            raise CryptoError("ckks: context blob is truncated")
        preset = get_preset(blob[6 : 6 + name_len].decode("ascii", errors="replace"))
        preset.check_security()
        is_secret = blob[6 + name_len] == 1
        if len(blob) > max_context_bytes(preset, secret=is_secret):
            raise CryptoError(f"ckks: context blob is oversize ({len(blob)} bytes)")
        try:
            context = ts.context_from(blob[7 + name_len :])
        except Exception:
            raise CryptoError("ckks: context blob is truncated or corrupt; re-send it") from None
        if context.has_secret_key() != is_secret:
            raise CryptoError("ckks: context blob's secret-key flag does not match its content")
        if context.has_galois_keys():
            raise CryptoError("ckks: context carries Galois keys; aggregation contexts must not")
        if context.global_scale != 2.0**preset.scale_bits:
            raise CryptoError(f"ckks: context scale does not match preset {preset.name!r}")
        loaded = cls(preset, context)
        if expected_fingerprint is not None and loaded.fingerprint != expected_fingerprint:
            raise CryptoError(
                f"ckks: context fingerprint {loaded.fingerprint[:16]}... differs from the announced "
                f"{expected_fingerprint[:16]}...; it is a foreign context"
            )
        return loaded

    @property
    def is_public(self) -> bool:
        return not self._context.has_secret_key()

    @property
    def has_secret_key(self) -> bool:
        return self._context.has_secret_key()

    @property
    def has_galois_keys(self) -> bool:
        return self._context.has_galois_keys()

    @property
    def fingerprint_bytes(self) -> bytes:
        """sha256 of the serialized public context; binds ciphertexts to this key pair."""
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(self.public().to_bytes()).digest()
        return self._fingerprint

    @property
    def fingerprint(self) -> str:
        return self.fingerprint_bytes.hex()

    def public(self) -> ScoreContext:
        """A copy without the secret key (what the server receives)."""
        if self.is_public:
            return self
        context = self._context.copy()
        context.make_context_public()
        return ScoreContext(self.preset, context)

    def to_bytes(self) -> bytes:
        """Serialize; includes the secret key only if this context holds one. Keep it secret."""
        body = self._context.serialize(
            save_public_key=True,
            save_secret_key=self.has_secret_key,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        name = self.preset.name.encode("ascii")
        return _CONTEXT_MAGIC + bytes([_VERSION, len(name)]) + name + bytes([1 if self.has_secret_key else 0]) + body

    @property
    def tenseal(self) -> ts.Context:
        return self._context

    def __repr__(self) -> str:
        kind = "public" if self.is_public else "secret"
        return f"ScoreContext({self.preset.name}, {kind}, fingerprint={self.fingerprint[:12]})"


def max_context_bytes(preset: CKKSPreset, *, secret: bool) -> int:
    """Upper bound on a context blob, for receivers that must refuse oversize input."""
    key = 2 * preset.poly_modulus_degree * len(preset.coeff_mod_bit_sizes) * 8
    return (2 if secret else 1) * key + _CONTEXT_SLACK


def ciphertext_count(preset: CKKSPreset, count: int) -> int:
    """How many ciphertexts hold ``count`` scores."""
    return max(1, math.ceil(count / preset.slots))


def encrypt_scores(context: ScoreContext, scores: np.ndarray | Sequence[float]) -> bytes:
    """Encrypt a score vector (any length up to MAX_SCORES) into one blob.

    Raises:
        CryptoError: the context is public, values are not finite, or too large to encode.
    """
    if context.is_public:
        raise CryptoError("ckks: cannot encrypt with a public-only context; only clients encrypt")
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0 or values.size > MAX_SCORES:
        raise CryptoError(f"ckks: score vector must hold 1..{MAX_SCORES} values (got {values.size})")
    if not np.all(np.isfinite(values)):
        raise CryptoError("ckks: scores must be finite numbers; found NaN or infinity")
    limit = context.preset.max_abs_value
    if np.max(np.abs(values)) > limit:
        raise CryptoError(f"ckks: a value exceeds {limit:g}, the largest preset {context.preset.name!r} encodes")
    slots = context.preset.slots
    chunks = [
        ts.ckks_vector(context.tenseal, values[start : start + slots].tolist()).serialize()
        for start in range(0, values.size, slots)
    ]
    return _pack(context.fingerprint_bytes, values.size, chunks)


def add(context: ScoreContext, blobs: Sequence[bytes]) -> bytes:
    """Homomorphic sum of score blobs; works with a public-only context.

    Raises:
        CryptoError: no blobs, a blob is malformed or foreign, or lengths differ.
    """
    if not blobs:
        raise CryptoError("ckks: nothing to add; pass at least one ciphertext blob")
    count, first = _unpack(context, blobs[0])
    totals = [_load_vector(context, chunk) for chunk in first]
    for blob in blobs[1:]:
        other_count, chunks = _unpack(context, blob)
        if other_count != count:
            raise CryptoError(f"ckks: ciphertexts hold different counts ({count} and {other_count}); cannot add")
        for total, chunk in zip(totals, chunks, strict=True):
            total.add_(_load_vector(context, chunk))
    return _pack(context.fingerprint_bytes, count, [total.serialize() for total in totals])


def decrypt_aggregate(context: ScoreContext, blob: bytes, *, count: int) -> np.ndarray:
    """Decrypt a (summed) score blob holding exactly ``count`` scores.

    Raises:
        CryptoError: the context is public, the blob is malformed or foreign, or the count differs.
    """
    if context.is_public:
        raise CryptoError("ckks: cannot decrypt with a public-only context; the server never decrypts")
    held, chunks = _unpack(context, blob)
    if held != count:
        raise CryptoError(f"ckks: ciphertext holds {held} scores, expected {count}")
    values = np.concatenate([np.asarray(_load_vector(context, c).decrypt()) for c in chunks])
    return values[:count]


def blob_count(context: ScoreContext, blob: bytes) -> int:
    """Number of scores a blob declares, after checking its framing against ``context``."""
    return _unpack(context, blob)[0]


def _pack(fingerprint: bytes, count: int, chunks: Sequence[bytes]) -> bytes:
    parts = [_VECTOR_HEADER.pack(_VECTOR_MAGIC, _VERSION, fingerprint, count, len(chunks))]
    for chunk in chunks:
        parts.append(_LENGTH.pack(len(chunk)))
        parts.append(chunk)
    return b"".join(parts)


def _unpack(context: ScoreContext, blob: bytes) -> tuple[int, list[bytes]]:
    blob = bytes(blob)
    preset = context.preset
    if len(blob) < _VECTOR_HEADER.size:
        raise CryptoError("ckks: ciphertext blob is truncated (shorter than its header)")
    magic, version, fingerprint, count, n = _VECTOR_HEADER.unpack_from(blob)
    if magic != _VECTOR_MAGIC or version != _VERSION:
        raise CryptoError("ckks: ciphertext blob has no CLMS v1 header; it is not a crosslm score vector")
    if fingerprint != context.fingerprint_bytes:
        raise CryptoError(
            f"ckks: ciphertext belongs to context {fingerprint.hex()[:16]}..., not this run's "
            f"{context.fingerprint[:16]}...; it is foreign"
        )
    if not 1 <= count <= MAX_SCORES or n != ciphertext_count(preset, count):
        raise CryptoError(f"ckks: ciphertext blob declares {count} scores in {n} ciphertexts; inconsistent")
    limit = _VECTOR_HEADER.size + n * (_LENGTH.size + preset.max_ciphertext_bytes)
    if len(blob) > limit:
        raise CryptoError(f"ckks: ciphertext blob is oversize ({len(blob)} bytes, limit {limit})")
    chunks, offset = [], _VECTOR_HEADER.size
    for _ in range(n):
        if offset + _LENGTH.size > len(blob):
            raise CryptoError("ckks: ciphertext blob is truncated")
        (size,) = _LENGTH.unpack_from(blob, offset)
        offset += _LENGTH.size
        if size > preset.max_ciphertext_bytes:
            raise CryptoError(f"ckks: one ciphertext is oversize ({size} bytes)")
        if offset + size > len(blob):
            raise CryptoError("ckks: ciphertext blob is truncated")
        chunks.append(blob[offset : offset + size])
        offset += size
    if offset != len(blob):
        raise CryptoError(f"ckks: ciphertext blob has {len(blob) - offset} trailing bytes; it is oversize")
    return count, chunks


def _load_vector(context: ScoreContext, chunk: bytes) -> ts.CKKSVector:
    try:
        return ts.ckks_vector_from(context.tenseal, chunk)
    except Exception:
        raise CryptoError(
            f"ckks: a ciphertext does not parse under preset {context.preset.name!r}; "
            "it is corrupt or from a foreign context"
        ) from None
