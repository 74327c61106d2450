"""Distributed Gaussian noise for the score release (noise flooding + DP).

Each of K clients adds N(0, (sigma_total / sqrt(K))^2) to each score before encrypting, so
the decrypted sum carries N(0, sigma_total^2): a Gaussian mechanism on the per-sample sum
of scores, which also floods the CKKS decryption noise (IND-CPA-D, Li-Micciancio 2020).
The ledger records ``ScoreRelease.to_dict()``; this module only describes the mechanism.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass

import numpy as np

from crosslm_secure.errors import CryptoError


@dataclass(frozen=True)
class ScoreRelease:
    """One score release, as the privacy ledger needs it.

    Attributes:
        mechanism: Always ``gaussian``.
        sigma_total: Std of the noise in the decrypted per-sample sum.
        share_sigma: Std each client adds (``sigma_total / sqrt(contributors)``).
        contributors: K, the clients whose shares are summed.
        count: Number of scores (synthetic samples) released.
        sensitivity_per_score: Each score is clipped to [0, 1], so one client changes a
            per-sample sum by at most 1.
        l2_sensitivity: Client-level L2 sensitivity of the whole vector (``sqrt(count)``),
            for a neighbouring private dataset that changes every score of one client.
        noise_multiplier: ``sigma_total / l2_sensitivity``; 0 when noise is off.
        honest_share_only: If one client (e.g. the decryptor) subtracts its own share, the
            rest still carries ``sigma_total * sqrt((K-1)/K)``; recorded for conservative accounting.
    """

    mechanism: str
    sigma_total: float
    share_sigma: float
    contributors: int
    count: int
    sensitivity_per_score: float
    l2_sensitivity: float
    noise_multiplier: float
    honest_share_only: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def release_parameters(*, sigma_total: float, contributors: int, count: int) -> ScoreRelease:
    """Describe the Gaussian release of ``count`` scores summed over ``contributors`` clients.

    Raises:
        CryptoError: negative sigma, no contributors or no scores.
    """
    if sigma_total < 0 or not math.isfinite(sigma_total):
        raise CryptoError(f"noise: sigma_total must be a finite number >= 0 (got {sigma_total})")
    if contributors < 1 or count < 1:
        raise CryptoError(f"noise: need >= 1 contributor and >= 1 score (got {contributors}, {count})")
    l2 = math.sqrt(count)
    return ScoreRelease(
        mechanism="gaussian",
        sigma_total=sigma_total,
        share_sigma=sigma_total / math.sqrt(contributors),
        contributors=contributors,
        count=count,
        sensitivity_per_score=1.0,
        l2_sensitivity=l2,
        noise_multiplier=sigma_total / l2,
        honest_share_only=sigma_total * math.sqrt((contributors - 1) / contributors),
    )


def noise_share(release: ScoreRelease, rng: np.random.Generator | None = None) -> np.ndarray:
    """This client's Gaussian share for ``release`` (zeros when sigma is 0).

    ``rng`` is for tests; by default a generator seeded from the OS entropy pool is used so
    no party can predict the share.
    """
    if release.share_sigma == 0:
        return np.zeros(release.count)
    rng = rng or np.random.default_rng(secrets.randbits(128))
    return rng.normal(0.0, release.share_sigma, release.count)
