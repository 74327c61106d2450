"""Canaries and the one-run epsilon lower bound of Steinke, Nasr and Jagielski (NeurIPS 2023).

Theorem (their Thm. 3.1, as we use it): m canaries, each included independently with
probability 1/2; an auditor makes r guesses (the rest abstain) and v are right. If the
training algorithm is (eps, delta)-DP then

    P[V >= v] <= f(v) + 2 m delta * max_{i=1..v} (f(v - i) - f(v)) / i,
    f(u) = P[Binomial(r, e^eps / (1 + e^eps)) >= u].

The empirical lower bound is the largest eps whose bound is still below ``1 - confidence``:
any smaller claimed eps is rejected at that confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

EPS_SEARCH_MAX = 60.0


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Probability of >= v correct out of r guesses on m canaries under (eps, delta)-DP."""
    from scipy.stats import binom  # lazy: scipy.stats takes a second to import, and every CLI start paid it

    if not 0 <= v <= r <= m:
        raise ValueError(f"one-run bound needs 0 <= v <= r <= m (got v={v}, r={r}, m={m})")
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = float(binom.sf(v - 1, r, q))
    if v == 0 or delta == 0:
        return min(1.0, tail)
    below = binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[W = v-1], P[W = v-2], ..., P[W = 0]
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(1.0, tail + 2 * m * delta * alpha)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float) -> float:
    """The largest eps rejected at ``confidence`` by v correct of r guesses (0 if none is)."""
    level = 1.0 - confidence
    if p_value(m, r, v, 0.0, delta) > level:
        return 0.0
    low, high = 0.0, EPS_SEARCH_MAX
    if p_value(m, r, v, high, delta) <= level:
        return high
    for _ in range(60):
        mid = (low + high) / 2
        if p_value(m, r, v, mid, delta) <= level:
            low = mid
        else:
            high = mid
    return low


def guess(scores: np.ndarray, guesses: int) -> np.ndarray:
    """+1 (in) for the top half of ``guesses`` scores, -1 (out) for the bottom half, 0 = abstain."""
    order = np.argsort(-scores, kind="stable")
    top = guesses - guesses // 2
    result = np.zeros(len(scores), dtype=np.int64)
    result[order[:top]] = 1
    if guesses // 2:
        result[order[-(guesses // 2) :]] = -1
    return result


def feature_canaries(
    count: int, data: np.ndarray, num_labels: int, seed: int, *, data_directions: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (the head's input lives on the unit sphere) with random labels, drawn
    orthogonal to the main directions of the private features ``data`` (so what the head
    learns from real records barely moves a canary's score) and, when they fit,
    orthogonal to each other (so canaries do not move each other's scores either).

    Args:
        count: canaries m.
        data: ``[n, dim]`` private features.
        num_labels: classes.
        seed: seeds directions and labels.
        data_directions: leading singular directions of ``data`` to avoid (default dim // 4).
    """
    rng = np.random.default_rng([seed, 31])
    dim = data.shape[1]
    avoid = min(len(data), dim // 4 if data_directions is None else data_directions)
    basis = np.eye(dim)
    if avoid > 0:
        _, _, vt = np.linalg.svd(np.asarray(data, dtype=np.float64), full_matrices=True)
        basis = vt[avoid:].T  # [dim, dim - avoid], orthonormal complement of the leading directions
    free = basis.shape[1]
    if count <= free:
        q, _ = np.linalg.qr(rng.standard_normal((free, count)))
        vectors = (basis @ q).T
    else:
        vectors = rng.standard_normal((count, free)) @ basis.T
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), rng.integers(num_labels, size=count)


def text_canaries(count: int, num_labels: int, seed: int, words: int = 8) -> tuple[list[str], np.ndarray]:
    """Random letter strings (unlike any review) with random labels, for full fine-tuning."""
    rng = np.random.default_rng([seed, 32])
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    texts = [
        " ".join("".join(rng.choice(letters, size=int(rng.integers(3, 8)))) for _ in range(words)) for _ in range(count)
    ]
    return texts, rng.integers(num_labels, size=count)


def inclusion(count: int, seed: int) -> np.ndarray:
    """Which canaries go into training: independent fair coins."""
    return np.random.default_rng([seed, 33]).random(count) < 0.5


@dataclass
class CanaryEvidence:
    """What one training with canaries measured, before the verdict (black-box or white-box)."""

    numbers: dict[str, Any]
    """The check's flat numbers: client, bound, claim, canaries, guesses, correct, mode, ..."""
    scores: np.ndarray
    """Every canary's score (higher = more likely included)."""
    included: np.ndarray
    """Each canary's inclusion coin."""
    fail_bound: bool
    """The lower bound exceeds a finite claimed epsilon."""
    disagreements: tuple[str, ...] = ()
    """Where the client's ledger differs from the configured mechanism (a finding each)."""
    fail_mechanism: bool = False
    """White-box only: included canaries moved the model more than the recorded noise and rate allow."""
