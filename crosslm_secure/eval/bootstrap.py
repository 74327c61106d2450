"""95% percentile-bootstrap intervals of macro-F1 over the test records, single and paired.

Pure functions of stored predictions (:mod:`crosslm_secure.eval.predictions`), seeded, so a
report rebuilt from the same run shows the same intervals. A resample draws each evaluation's
test records with replacement; the macro-F1 of a resample is computed exactly as
:func:`crosslm_secure.eval.metrics.macro_f1` (a class absent from truth and answers scores 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crosslm_secure.eval.predictions import Predictions

RESAMPLES = 1000
SEED = 20261206
LEVEL = 0.95
_CHUNK = 250
"""Resamples drawn at once (bounds memory at ``_CHUNK`` x test records)."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile-bootstrap interval, over ``n`` test records in all."""

    point: float
    low: float
    high: float
    n: int

    def text(self, signed: bool = False) -> str:
        """``0.827 [0.79, 0.86]`` (``+0.042 [+0.01, +0.07]`` when ``signed``)."""
        sign = "+" if signed else ""
        return f"{self.point:{sign}.3f} [{self.low:{sign}.2f}, {self.high:{sign}.2f}]"


def macro_f1_interval(
    evaluations: Sequence[Predictions], num_labels: int, *, resamples: int = RESAMPLES, seed: int = SEED
) -> Interval:
    """The mean macro-F1 over ``evaluations`` (one: that evaluation's macro-F1) and its interval.

    Each evaluation's records are resampled on their own (clients hold disjoint test sets), in
    the order of their ids, so the interval does not depend on the order they were stored in.

    Raises:
        ValueError: no evaluation, or one without records.
    """
    _require(evaluations)
    rng = np.random.default_rng(seed)
    point = float(np.mean([_f1(_counts(p, num_labels), np.ones((1, len(p))))[0] for p in evaluations]))
    draws = np.zeros(resamples)
    for p in evaluations:
        counts = _counts(aligned(p, sorted(p.records)), num_labels)
        draws += np.concatenate([_f1(counts, w) for w in _weights(len(p), resamples, rng)])
    return _interval(point, draws / len(evaluations), sum(len(p) for p in evaluations))


def paired_difference(
    pairs: Sequence[tuple[Predictions, Predictions]],
    num_labels: int,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """Mean over ``pairs`` of macro-F1(a) - macro-F1(b), each pair resampled over its shared records.

    Both sides of a resample draw the same records (in the order of their ids), so what the two
    evaluations share (the records' difficulty) cancels and the interval is that of the
    difference alone.

    Raises:
        ValueError: no pair, or a pair whose two sides hold different test records.
    """
    _require([side for pair in pairs for side in pair])
    rng = np.random.default_rng(seed)
    points, draws = [], np.zeros(resamples)
    for a, b in pairs:
        a = aligned(a, sorted(a.records))  # the same draws whatever order a run stored its records in
        b = aligned(b, a.records)
        counts_a, counts_b = _counts(a, num_labels), _counts(b, num_labels)
        ones = np.ones((1, len(a)))
        points.append(_f1(counts_a, ones)[0] - _f1(counts_b, ones)[0])
        draws += np.concatenate([_f1(counts_a, w) - _f1(counts_b, w) for w in _weights(len(a), resamples, rng)])
    return _interval(float(np.mean(points)), draws / len(pairs), sum(len(a) for a, _ in pairs))


def aligned(predictions: Predictions, records: Sequence[str]) -> Predictions:
    """``predictions`` reordered to ``records``.

    Raises:
        ValueError: the two hold different sets of records.
    """
    index = {record: i for i, record in enumerate(predictions.records)}
    if len(index) != len(records) or any(r not in index for r in records):
        shared = sum(1 for r in records if r in index)
        raise ValueError(f"{shared} of {len(records)} and {len(index)} test records are shared")
    order = [index[r] for r in records]
    return Predictions(
        tuple(records), tuple(predictions.labels[i] for i in order), tuple(predictions.predicted[i] for i in order)
    )


def _require(evaluations: Sequence[Predictions]) -> None:
    if not evaluations or any(len(p) == 0 for p in evaluations):
        raise ValueError("bootstrap: every evaluation needs at least one test record")


def _counts(p: Predictions, num_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per record and class: is it a true positive, a false positive, a false negative (n x classes)."""
    truth = np.asarray(p.labels)[:, None] == np.arange(num_labels)[None, :]
    answer = np.asarray(p.predicted)[:, None] == np.arange(num_labels)[None, :]
    return (truth & answer).astype(float), (~truth & answer).astype(float), (truth & ~answer).astype(float)


def _f1(counts: tuple[np.ndarray, np.ndarray, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Macro-F1 of each row of ``weights`` (how often each record is drawn)."""
    tp, fp, fn = (weights @ c for c in counts)
    denominator = 2 * tp + fp + fn
    per_class = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return per_class.mean(axis=1)


def _weights(n: int, resamples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Draw counts of each record for ``resamples`` resamples of size ``n``, in chunks."""
    chunks = []
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        drawn = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        chunks.append(np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n).astype(float))
    return chunks


def _interval(point: float, draws: np.ndarray, n: int) -> Interval:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(point, float(low), float(high), n)
