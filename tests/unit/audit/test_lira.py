"""LiRA (offline) against reference models, and the resolvability rule for low-FPR figures."""

from __future__ import annotations

import numpy as np

from crosslm_secure.audit.attacks import LIRA_MIN_REFERENCES_PER_RECORD, LiraAttack, logit_confidence
from crosslm_secure.audit.mia import resolvable
from crosslm_secure.audit.roc import auc


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _world(references: int, seed: int = 0):
    """Records of varied difficulty; members' target confidence sits 1.5 reference-stds above their OUT mean."""
    rng = np.random.default_rng(seed)
    n = 400
    difficulty = rng.normal(0, 3, size=2 * n)  # per-record OUT mean of phi: what LOSS cannot separate
    spread = rng.uniform(0.3, 1.5, size=2 * n)
    refs = _sigmoid(difficulty + spread * rng.standard_normal((references, 2 * n)))
    shift = np.r_[np.full(n, 1.5), np.zeros(n)] * spread
    target = _sigmoid(difficulty + shift + spread * rng.standard_normal(2 * n))
    return target, refs, n


def test_lira_separates_members_that_loss_cannot() -> None:
    target, refs, n = _world(LIRA_MIN_REFERENCES_PER_RECORD)
    scores = LiraAttack().scores(target, refs, target[:0], refs[:, :0])
    loss = np.log(target)
    assert auc(scores[:n], scores[n:]) > 0.75
    assert auc(scores[:n], scores[n:]) > auc(loss[:n], loss[n:]) + 0.1


def test_lira_with_few_references_pools_the_variance_and_still_ranks() -> None:
    target, refs, n = _world(2, seed=1)
    scores = LiraAttack().scores(target, refs, target[:0], refs[:, :0])
    assert np.all(np.isfinite(scores))
    assert auc(scores[:n], scores[n:]) > 0.6


def test_lira_on_a_model_that_learned_nothing_is_at_chance() -> None:
    rng = np.random.default_rng(2)
    refs = _sigmoid(rng.normal(0, 1, size=(8, 600)))
    target = _sigmoid(rng.normal(0, 1, size=600))
    scores = LiraAttack().scores(target, refs, target[:0], refs[:, :0])
    assert 0.4 < auc(scores[:300], scores[300:]) < 0.6


def test_logit_confidence_is_finite_at_the_edges() -> None:
    values = logit_confidence(np.array([0.0, 0.5, 1.0]))
    assert np.all(np.isfinite(values)) and values[1] == 0 and values[0] < 0 < values[2]


def test_low_fpr_is_resolvable_only_when_one_non_member_can_exceed_the_threshold() -> None:
    assert not resolvable(200, 0.001)
    assert not resolvable(999, 0.001)
    assert resolvable(1000, 0.001)
    assert resolvable(100, 0.01) and not resolvable(99, 0.01)
