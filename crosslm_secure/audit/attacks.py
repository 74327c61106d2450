"""Membership-inference attack scores (higher = more likely a member).

One small interface: each attack maps the target model's (and, for RMIA, the reference
models') probability of the true label to a score per audited record.

* LOSS (Yeom et al. 2018): the target's log-probability of the true label (= -loss).
* RMIA (Zarifzadeh et al. 2024), offline: ``LR(x) = Pr(x|theta) / Pr(x)`` with
  ``Pr(x) = ((1 + a) * mean_ref Pr(x|theta_ref) + (1 - a)) / 2`` from reference models that
  never saw x (the paper's linear approximation of the IN models, needed when reference
  models are few); the score is the share of population samples z with
  ``LR(x) / LR(z) > gamma``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

FLOOR = 1e-12


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
