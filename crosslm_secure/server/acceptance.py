"""Which synthetic samples the released aggregate accepts (docs/researchers.md, "What a run does", step 5).

A fixed threshold on mean scores fails both ways: flat scores (mean ~1/labels) accept
nothing at 0.5, and a threshold near chance accepts noise. By default acceptance adapts to
the aggregate: per intended label, a sample must score above chance by a margin and sit in
that label's top share; then every label keeps the same number (its best), so neither the
clients' enhancement data nor the LLM's tuning data drifts to one label.
"""

from __future__ import annotations

import math

import numpy as np

from crosslm_secure.config import FeedbackConfig
from crosslm_secure.errors import ProtocolError


def accept_samples(mean_scores: np.ndarray, labels: np.ndarray, num_labels: int, cfg: FeedbackConfig) -> np.ndarray:
    """A boolean mask of accepted samples.

    Args:
        mean_scores: the released mean score per sample (clipped to [0, 1] here: DP noise can
            push a mean outside).
        labels: each sample's intended label index.
        num_labels: labels of the task (chance is ``1 / num_labels``).
        cfg: ``threshold`` (fixed, or None for adaptive), ``accept_margin``, ``accept_fraction``,
            ``balance``.

    Raises:
        ProtocolError: scores or labels are not numbers, they differ in length, a score is not
            finite (the reveal refuses these; this guards any other caller), or a label is no
            index of the task's labels.
    """
    try:
        scores = np.asarray(mean_scores, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"acceptance: mean scores and labels must be numbers ({exc}); refused") from None
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ProtocolError(
            f"acceptance: {scores.size} mean scores for {labels.size} samples (shapes {scores.shape} and "
            f"{labels.shape}); the reveal must hold one mean per sample"
        )
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise ProtocolError(
            f"acceptance: the mean score of sample {bad[0]} is not a finite number ({float(scores[bad[0]]):g}); "
            "only a checked reveal may be accepted"
        )
    outside = np.flatnonzero((labels < 0) | (labels >= num_labels))
    if outside.size:
        raise ProtocolError(
            f"acceptance: sample {outside[0]} has label index {labels[outside[0]]}, outside 0..{num_labels - 1}; "
            "every synthetic sample must carry one of the task's labels"
        )
    scores = np.clip(scores, 0.0, 1.0)
    if cfg.threshold is not None:
        keep = scores >= cfg.threshold
    else:
        keep = np.zeros(len(scores), dtype=bool)
        floor = 1.0 / num_labels + cfg.accept_margin
        for label in range(num_labels):
            ranked = _best_first(scores, labels == label)
            top = ranked[: math.ceil(cfg.accept_fraction * len(ranked))]
            keep[top[scores[top] > floor]] = True
    if cfg.balance:
        keep = _balanced(scores, labels, keep, num_labels)
    return keep


def _best_first(scores: np.ndarray, where: np.ndarray) -> np.ndarray:
    index = np.flatnonzero(where)
    return index[np.argsort(-scores[index], kind="stable")]


def _balanced(scores: np.ndarray, labels: np.ndarray, keep: np.ndarray, num_labels: int) -> np.ndarray:
    """Keep the best ``k`` accepted samples of every label that has any, ``k`` the smallest such count."""
    counts = [int(np.sum(keep & (labels == label))) for label in range(num_labels)]
    present = [count for count in counts if count > 0]
    if not present:
        return keep
    k = min(present)
    balanced = np.zeros_like(keep)
    for label in range(num_labels):
        balanced[_best_first(scores, keep & (labels == label))[:k]] = True
    return balanced
