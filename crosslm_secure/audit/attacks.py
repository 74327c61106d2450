"""Membership-inference attack scores (higher = more likely a member).

One small interface: each attack maps the target model's (and, for RMIA, the reference
models') probability of the true label to a score per audited record.

* LOSS (Yeom et al. 2018): the target's log-probability of the true label (= -loss).
* RMIA (Zarifzadeh et al. 2024), offline: ``LR(x) = Pr(x|theta) / Pr(x)`` with
  ``Pr(x) = ((1 + a) * mean_ref Pr(x|theta_ref) + (1 - a)) / 2`` from reference models that
  never saw x (the paper's linear approximation of the IN models, needed when reference
  models are few); the score is the share of population samples z with
  ``LR(x) / LR(z) > gamma``.
* LiRA (Carlini et al. 2022), offline: the target's logit-scaled confidence
  ``phi = log p - log(1 - p)`` against a Gaussian fitted to the reference (OUT) models' phi of
  the same record; the score is the one-sided z-value ``(phi - mean_out) / std_out``. With fewer
  than ``LIRA_MIN_REFERENCES_PER_RECORD`` reference models the std is pooled over records (the
  paper's fixed-variance variant). Shares the reference models with RMIA.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

FLOOR = 1e-12
LIRA_MIN_REFERENCES_PER_RECORD = 16


class Attack(Protocol):
    name: str

    def scores(
        self, target: np.ndarray, references: np.ndarray, target_z: np.ndarray, references_z: np.ndarray
    ) -> np.ndarray:
        """Scores of the audited records.

        Args:
            target: ``[n]`` target model's P(true label) of each audited record.
            references: ``[k, n]`` the same from each reference model.
            target_z: ``[m]`` target's P(true label) of the population samples z.
            references_z: ``[k, m]`` the same from each reference model.
        """
        ...


class LossAttack:
    name = "LOSS"

    def scores(
        self, target: np.ndarray, references: np.ndarray, target_z: np.ndarray, references_z: np.ndarray
    ) -> np.ndarray:
        return np.log(np.maximum(target, FLOOR))


class RmiaAttack:
    """Offline RMIA with parameter ``a`` and threshold ``gamma``."""

    name = "RMIA"

    def __init__(self, a: float, gamma: float) -> None:
        self.a = a
        self.gamma = gamma

    def likelihood_ratio(self, target: np.ndarray, references: np.ndarray) -> np.ndarray:
        out = references.mean(axis=0)
        marginal = 0.5 * ((1 + self.a) * out + (1 - self.a))
        return np.maximum(target, FLOOR) / np.maximum(marginal, FLOOR)

    def scores(
        self, target: np.ndarray, references: np.ndarray, target_z: np.ndarray, references_z: np.ndarray
    ) -> np.ndarray:
        ratio_x = self.likelihood_ratio(target, references)
        ratio_z = np.sort(self.likelihood_ratio(target_z, references_z))
        # share of z with LR(x) / LR(z) > gamma  <=>  LR(z) < LR(x) / gamma
        below = np.searchsorted(ratio_z, ratio_x / self.gamma, side="left")
        # Ties in the share are broken by the ratio itself, so the ranking keeps its resolution.
        return below / max(1, len(ratio_z)) + 1e-6 * np.tanh(np.log(ratio_x))


class LiraAttack:
    """Offline LiRA (one-sided Gaussian test against the OUT reference models)."""

    name = "LiRA"

    def scores(
        self, target: np.ndarray, references: np.ndarray, target_z: np.ndarray, references_z: np.ndarray
    ) -> np.ndarray:
        phi, phi_out = logit_confidence(target), logit_confidence(references)
        mean = phi_out.mean(axis=0)
        if phi_out.shape[0] >= LIRA_MIN_REFERENCES_PER_RECORD:
            std = phi_out.std(axis=0, ddof=1)
        else:
            pooled = (phi_out - mean).ravel()
            std = np.full_like(mean, pooled.std(ddof=1) if pooled.size > 1 else 1.0)
        return (phi - mean) / np.maximum(std, 1e-6)


def logit_confidence(p: np.ndarray) -> np.ndarray:
    """``log p - log(1 - p)``, clipped away from 0 and 1 (LiRA's approximately Gaussian statistic)."""
    clipped = np.clip(p, FLOOR, 1 - 1e-7)
    return np.log(clipped) - np.log1p(-clipped)
