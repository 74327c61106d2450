"""Pairwise masks that cancel in the sum, so one decrypted contribution is noise.

For every pair of participants (i, j) both derive the same seed from their X25519 shared
secret and the round's identity (run, round, attempt, participant set); the lower site id
adds the mask, the higher subtracts it. Summed over the full participant set the masks
cancel exactly (the same float64 values are added and subtracted); any proper subset keeps
a random residue. A new attempt or a changed participant set gives fresh masks, so a
dropped-out round is retried with masks never reused.

Mask scale, the trade-off. A masked score ``x + m`` with ``m`` uniform on ``[-M, M]`` hides
``x in [0, 1]`` only statistically: two scores differ in distribution by at most
``1 / (2M)`` per coordinate, so larger ``M`` hides better. But every contribution must
still encode under CKKS: ``|x + sum of K-1 masks| * 2^scale_bits`` must stay below
``q/2`` (else TenSEAL refuses "encoded values are too large"), and encoding in float64
loses about ``(K-1) * M * 2^-52`` per value. After cancellation the CKKS error does not
grow with ``M`` (measured: sum error ~1e-8 for M up to 2^20 with K = 10), so ``M`` is
set as large as the preset's headroom allows, capped at ``MAX_PAIR_MASK = 2^20`` where the
float64 term would start to approach the 1e-6 budget.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crosslm_secure.crypto.ckks import CKKSPreset
from crosslm_secure.crypto.keys import ParticipantKeys, PublicIdentity, frame_fields
from crosslm_secure.errors import CryptoError

MAX_PAIR_MASK = float(2**20)
_PAIR_DOMAIN = "crosslm-pairwise-v1"
_MASK_DOMAIN = "crosslm-mask-v1"


def pairwise_secret(own: ParticipantKeys, peer: PublicIdentity) -> bytes:
    """The 32-byte secret ``own`` shares with ``peer`` (X25519 + HKDF-SHA256, order-free).

    Raises:
        CryptoError: the peer's key is degenerate (a low-order point).
    """
    if own.site == peer.site:
        raise CryptoError(f"masks: {own.site} cannot share a mask secret with itself")
    try:
        shared = own.exchange_key.exchange(X25519PublicKey.from_public_bytes(peer.exchange_public))
    except ValueError:
        raise CryptoError(f"masks: {peer.site}'s exchange key is degenerate; re-enroll it") from None
    low, high = sorted((own.site, peer.site))
    info = frame_fields(_PAIR_DOMAIN, low, high)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def pairwise_secrets(own: ParticipantKeys, peers: Sequence[PublicIdentity]) -> dict[str, bytes]:
    """Secrets with every peer except ``own`` itself, by peer site."""
    return {peer.site: pairwise_secret(own, peer) for peer in peers if peer.site != own.site}


def mask_seed(pair_secret: bytes, *, run_id: str, round_index: int, attempt: int, participants: Sequence[str]) -> bytes:
    """HMAC-SHA256 seed of one pair's mask for one (run, round, attempt, participant set)."""
    members = sorted(set(participants))
    message = frame_fields(_MASK_DOMAIN, run_id, round_index, attempt, len(members), *members)
    return hmac.new(pair_secret, message, hashlib.sha256).digest()


def mask_values(seed: bytes, count: int, scale: float) -> np.ndarray:
    """``count`` values uniform on ``[-scale, scale)`` from SHAKE-256(seed).

    Each value takes 8 bytes big-endian; the top 53 bits give ``u in [0, 1)`` and the
    value is ``scale * (2u - 1)``. Specified this way (not via numpy's generators) so
    other implementations and the test vectors reproduce it bit for bit.
    """
    stream = np.frombuffer(hashlib.shake_256(seed).digest(8 * count), dtype=">u8")
    uniform = (stream >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return scale * (2.0 * uniform - 1.0)


def client_mask(
    site: str,
    pair_secrets: Mapping[str, bytes],
    *,
    run_id: str,
    round_index: int,
    attempt: int,
    participants: Sequence[str],
    count: int,
    scale: float,
) -> np.ndarray:
    """This client's total mask: ``+m_ij`` for peers ``j > i``, ``-m_ij`` for ``j < i``.

    Raises:
        CryptoError: ``site`` is not a participant, or a peer's secret is missing.
    """
    members = sorted(set(participants))
    if site not in members:
        raise CryptoError(f"masks: {site} is not in the announced participant set {members}")
    total = np.zeros(count, dtype=np.float64)
    for peer in members:
        if peer == site:
            continue
        if peer not in pair_secrets:
            raise CryptoError(f"masks: no pairwise secret with {peer}; is it enrolled in the registry?")
        seed = mask_seed(
            pair_secrets[peer], run_id=run_id, round_index=round_index, attempt=attempt, participants=members
        )
        values = mask_values(seed, count, scale)
        total += values if site < peer else -values
    return total


def mask_scale(preset: CKKSPreset, participants: int) -> float:
    """Largest per-pair mask bound that keeps every contribution encodable (see module doc)."""
    peers = max(1, participants - 1)
    return min(MAX_PAIR_MASK, preset.max_abs_value / (2 * peers))
