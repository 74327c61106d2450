"""Plaintext aggregation: no protection. Kept to price the protection; labelled unprotected."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crosslm_secure.aggregation.base import Protected
from crosslm_secure.errors import ProtocolError

_DTYPE = np.dtype("<f8")


class PlaintextAggregator:
    """Scores travel as raw float64; the server sums them in the clear."""

    name = "plaintext"
    protected = False

    def protect(
        self, scores: np.ndarray, *, round_index: int, participants: Sequence[str], attempt: int = 0
    ) -> Protected:
        """The raw vector; no noise, so no release to record."""
        return Protected(np.ascontiguousarray(scores, dtype=_DTYPE).tobytes(), release=None)

    def combine(self, contributions: Sequence[bytes]) -> bytes:
        if not contributions:
            raise ProtocolError("aggregate: no contributions to combine; at least one client must score")
        vectors = [_decode(blob) for blob in contributions]
        sizes = {v.size for v in vectors}
        if len(sizes) != 1:
            raise ProtocolError(f"aggregate: contributions have different lengths {sorted(sizes)}")
        return np.sum(vectors, axis=0).astype(_DTYPE).tobytes()

    def reveal(
        self,
        aggregate: bytes,
        contributions: Sequence[bytes],
        *,
        count: int,
        round_index: int | None = None,
        participants: Sequence[str] | None = None,
        attempt: int | None = None,
    ) -> np.ndarray:
        if self.combine(contributions) != bytes(aggregate):
            raise ProtocolError(
                "aggregate: the aggregate is not the sum of the signed contributions; refusing to reveal"
            )
        total = _decode(aggregate)
        if total.size != count:
            raise ProtocolError(f"aggregate: holds {total.size} scores, expected {count}")
        return total / len(contributions)


def _decode(blob: bytes) -> np.ndarray:
    if len(blob) % _DTYPE.itemsize:
        raise ProtocolError("aggregate: plaintext contribution is truncated (length not a multiple of 8)")
    return np.frombuffer(blob, dtype=_DTYPE)
