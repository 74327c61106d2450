"""The feedback aggregator interface: protect on clients, combine blind, reveal the mean.

One object per party. A client's aggregator can ``protect`` its score vector; the
server's can only ``combine`` contributions; the round's decryptor (a client) can
``reveal`` the aggregate after checking it against the contributions. Plaintext and CKKS
implement the same three calls, so the coordinator never knows which one runs; a
:class:`~crosslm_secure.aggregation.schemes.FeedbackScheme` builds them for each party.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from crosslm_secure.crypto.noise import ScoreRelease


@dataclass(frozen=True)
class Protected:
    """One client's protected score vector, and the privacy release it makes.

    ``release`` is what the client's ledger must record (None: the vector carries no noise, so
    there is no DP release to account). Returning it with the contribution makes recording it
    part of the interface: a scheme cannot leave it out by omission.
    """

    contribution: bytes
    release: ScoreRelease | None


class Aggregator(Protocol):
    name: str
    """Short name shown in summaries (e.g. ``plaintext``, ``ckks``)."""

    protected: bool
    """False when the server could read per-client scores (shown as "unprotected")."""

    def protect(
        self, scores: np.ndarray, *, round_index: int, participants: Sequence[str], attempt: int = 0
    ) -> Protected:
        """Client side: turn this client's per-sample scores into a contribution blob and its release."""
        ...

    def combine(self, contributions: Sequence[bytes]) -> bytes:
        """Server side: add contributions without learning any of them."""
        ...

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
        """Decryptor side: the mean score per sample, once ``aggregate`` is checked to be the
        sum of ``contributions`` (the blobs of the signed ``score.reply`` messages).

        ``round_index``, ``participants`` and ``attempt`` bind the reveal to the aggregation
        it belongs to; aggregators that sign contributions check them.
        """
        ...
