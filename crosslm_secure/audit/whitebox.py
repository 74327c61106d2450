"""White-box one-run DP audit with gradient (Dirac) canaries (Steinke, Nasr, Jagielski 2023, Sec. 6).

A head-only SLM trains a linear softmax head ``W x + b`` with DP-SGD. The audit re-runs that
training with the client's real trainer (:class:`~crosslm_secure.client.dp_trainer.DPTrainer`:
its Poisson loader, Opacus clipping and noise, optimizer, steps and rounds, and whatever bug it
has) on the client's records plus m canaries, each included by a fair coin.

Canaries are per-example gradients in fixed directions of the head's parameters: canary i
contributes the gradient ``c * (1_C outer u_i)`` (plus a tiny bias part), with ``u_i``
orthonormal. Adding the same vector to every class's row leaves the softmax unchanged, so
every real record's gradient ``(p - e_y) outer x`` is orthogonal to every canary direction:
the canaries see the mechanism's noise and each other's absence, nothing else. The gradient
is made far larger than ``max_grad_norm``, so clipping cuts it to exactly the clip norm, like a
worst-case record. :class:`DiracHead` produces that gradient through an ordinary cross-entropy
loss, so Opacus computes, clips and noises it like any record's.

Scores (white-box: the auditor sees the parameters after every step): the per-step update of
the head projected on each canary direction, standardised by that step's spread over all
canaries, then summed as the log-likelihood ratio of the claimed mechanism (rate q, per-step
signal 1/sigma), which is the plain sum when q = 1. The top and bottom scores are guessed
in / out, the rest abstain; the correct guesses give the paper's 95% lower bound on epsilon.

Two more numbers sit beside it:
- the ceiling: the bound the method certifies for the same m and guesses when the number of
  correct guesses equals its expectation k e^eps / (1 + e^eps) under the claimed eps (the
  paper's idealised mechanism);
- the mechanism check: with the inclusion coins known to the auditor, the measured mean shift
  ``mu`` of an included canary's summed, standardised update against what the ledger's
  (sigma, q, steps) predict, ``q sqrt(T) / sigma``. Halved noise, a doubled true sample rate
  or missing clipping each raise ``mu`` by 2x or more; the check fails when the measured shift
  exceeds the claimed one at ``MECHANISM_ALPHA``. Honest runs fail it with that probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import norm
from torch import nn

from crosslm_secure.audit.canaries import epsilon_lower_bound, guess, inclusion
from crosslm_secure.privacy.accounting import MechanismBlock, epsilon
from crosslm_secure.privacy.ledger_format import Mechanism

MECHANISM_ALPHA = 1e-4
"""One-sided level of the mechanism check: an honest run fails it with this probability."""
SMALL_SIGMA = 0.5
"""Below this measured noise multiplier the measured epsilon is computed with RDP (PRV's grid explodes)."""
CANARY_SCALE = 1e3
"""Canary gradient norm over the clip norm: far above it, so clipping cuts every canary to the clip norm."""


class DiracHead(nn.Module):
    """Dropout + linear head whose input rows are ``[features, canary index]`` (index -1 = a real record).

    Real rows: ``classifier(dropout(x))``, as :class:`~crosslm_secure.client.features.FeatureHead`.
    Canary rows carry ``CANARY_SCALE * clip * u_i`` as features and label 0; their logits are
    ``-t e_0`` with ``t = sum_k z_k - detach(sum_k z_k)`` (value 0), so the loss gradient at the
    linear output is ``(1 - 1/C) 1_C`` whatever the weights: a fixed gradient direction.
    Records the canary projection of the weights at every training forward (= every step).
    """

    def __init__(self, classifier: nn.Linear, dropout: float, directions: torch.Tensor) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = classifier
        self.register_buffer("directions", directions.float())
        self.trace: list[np.ndarray] = []

    def projection(self) -> np.ndarray:
        """``<W, 1_C outer u_i> / sqrt(C)`` for every canary i."""
        weight = self.classifier.weight.detach().float()
        return (weight.sum(dim=0) @ self.directions.T / math.sqrt(weight.shape[0])).cpu().double().numpy()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.trace.append(self.projection())
        x, index = inputs[:, :-1], inputs[:, -1]
        canary = (index >= 0).unsqueeze(1)
        z = self.classifier(torch.where(canary, x, self.dropout(x)))
        total = z.sum(dim=1, keepdim=True)
        moving = total - total.detach()
        fixed = torch.zeros_like(z)
        fixed[:, :1] = -moving
        return torch.where(canary, fixed, z)


@dataclass
class WhiteBoxResult:
    """What one white-box audit measured (``numbers`` for the JSON result)."""

    scores: np.ndarray
    included: np.ndarray
    numbers: dict[str, Any]
    fail_bound: bool
    fail_mechanism: bool


def canary_directions(count: int, dim: int, seed: int) -> torch.Tensor:
    """``count`` orthonormal directions in R^dim (count <= dim)."""
    if count > dim:
        raise ValueError(f"white-box audit: {count} orthogonal canaries do not fit in {dim} feature dimensions")
    rng = np.random.default_rng([seed, 41])
    q, _ = np.linalg.qr(rng.standard_normal((dim, count)))
    return torch.from_numpy(q.T.copy()).float()


def run_whitebox(
    trainer: Any,
    classifier: nn.Linear,
    dropout: float,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    canaries: int,
    rounds: int,
    seed: int,
    guess_fraction: float,
    confidence: float,
) -> WhiteBoxResult:
    """Train ``classifier`` with ``trainer`` on the records plus included canaries; audit it.

    Args:
        trainer: a ``DPTrainer`` set up for ``len(features) + included canaries`` records,
            with its own (throw-away) ledger: the claim is read from it after training.
        classifier: the linear head (trained in place).
        dropout: dropout on real records' features.
        features, labels: the private records (``[n, dim]``, ``[n]``).
        canaries: m (at most ``dim``).
        rounds: training rounds (each ``trainer.steps_per_round`` steps).
        seed: seeds canary directions and coins.
        guess_fraction: share of canaries guessed (half in, half out), fixed before scoring.
        confidence: of the lower bound.
    """
    directions = canary_directions(canaries, features.shape[1], seed)
    included = inclusion(canaries, seed)
    updates = _canary_updates(trainer, DiracHead(classifier, dropout, directions), features, labels, included, rounds)
    steps = len(updates)
    sigma, rate, delta, claimed = _claim(trainer)
    standard = updates / _robust_scale(updates)[:, None]
    scores = _likelihood_ratio(standard, rate, 1.0 / sigma if math.isfinite(sigma) else 0.0)
    guesses = max(1, min(canaries, round(guess_fraction * canaries)))
    correct = _correct_guesses(scores, included, guesses)
    lower = epsilon_lower_bound(canaries, guesses, correct, delta, confidence)
    ceiling = ceiling_bound(canaries, guesses, claimed, delta, confidence)
    check = mechanism_check(standard, included, sigma, rate)
    numbers = {
        "mode": "white-box",
        "empirical_epsilon_lower_bound": lower,
        "claimed_epsilon": claimed,
        "ceiling_epsilon": ceiling,
        "bound_over_ceiling": lower / ceiling if ceiling > 0 else math.nan,
        "canaries": canaries,
        "canaries_included": int(included.sum()),
        "guesses": guesses,
        "correct": correct,
        "guess_accuracy": correct / guesses,
        "confidence": confidence,
        "delta": delta,
        "noise_multiplier": sigma,
        "sample_rate": rate,
        "steps": steps,
        "clip_norm": float(trainer.privacy.max_grad_norm),
        "measured_epsilon": _measured_epsilon(check, sigma, rate, steps, delta, trainer),
    } | check
    fail_bound = math.isfinite(claimed) and lower > claimed
    return WhiteBoxResult(scores, included, numbers, fail_bound, bool(check["mechanism_fail"]))


def _correct_guesses(scores: np.ndarray, included: np.ndarray, guesses: int) -> int:
    """How many of the ``guesses`` top/bottom scores guess their canary's coin right."""
    made = guess(scores, guesses)
    return int(((made != 0) & (made == np.where(included, 1, -1))).sum())


def _measured_epsilon(
    check: dict[str, Any], sigma: float, rate: float, steps: int, delta: float, trainer: Any
) -> float | None:
    """Epsilon of the claimed schedule at the noise multiplier the measured canary shift implies."""
    if not math.isfinite(sigma):
        return None  # no noise was claimed (non-private run): no claimed schedule to re-account
    shift = check["measured_shift"]
    effective = sigma * check["claimed_shift"] / shift if shift > 0 else math.inf
    return _epsilon_at(effective, rate, steps, delta, trainer)


def _canary_updates(
    trainer: Any, head: DiracHead, features: torch.Tensor, labels: torch.Tensor, included: np.ndarray, rounds: int
) -> np.ndarray:
    """Train ``head`` on the records plus the included canaries; each step's update of the canary projections.

    Each included canary's features are its direction scaled far above the clip norm, so clipping
    cuts its gradient to exactly the clip norm.
    """
    clip = float(trainer.privacy.max_grad_norm)
    chosen = torch.nonzero(torch.from_numpy(included)).flatten()
    canary_x = head.directions[chosen] * (CANARY_SCALE * max(clip, 1.0))
    rows_x = torch.cat([features.float(), canary_x])
    index = torch.cat([torch.full((len(features),), -1.0), chosen.float()])
    train_x = torch.cat([rows_x, index.unsqueeze(1)], dim=1)
    train_y = torch.cat([labels.long(), torch.zeros(len(chosen), dtype=torch.long)])
    for round_index in range(1, rounds + 1):
        trainer.train_private_features(head, train_x, train_y, round_index=round_index)
        head.trace.append(head.projection())
    trace = np.array(_dedupe(head.trace))
    updates = -(np.diff(trace, axis=0))  # gradient descent moves an included canary's projection down
    return updates[np.any(updates != 0, axis=1)]


def ceiling_bound(m: int, guesses: int, eps: float, delta: float, confidence: float) -> float:
    """The paper's best bound for m canaries and ``guesses`` guesses at claimed ``eps``.

    The idealised eps-DP mechanism (randomised response) gets each guess right with
    probability ``e^eps / (1 + e^eps)``; the bound is computed at the expected count of correct
    guesses (rounded down, so the ceiling is never overstated).
    """
    if not math.isfinite(eps):
        return epsilon_lower_bound(m, guesses, guesses, delta, confidence)
    expected = guesses / (1.0 + math.exp(-eps))
    return epsilon_lower_bound(m, guesses, int(math.floor(expected + 1e-9)), delta, confidence)


def _mean_variance(values: np.ndarray) -> float:
    """The sample mean's variance estimate; NaN for fewer than two values (nothing to estimate from)."""
    return float(values.var(ddof=1)) / len(values) if len(values) > 1 else math.nan


def mechanism_check(standard: np.ndarray, included: np.ndarray, sigma: float, rate: float) -> dict[str, Any]:
    """Measured vs claimed mean shift of an included canary's summed standardised update.

    Under the claimed mechanism an included canary adds the clip norm to a step's noisy sum
    with probability q and the noise has standard deviation sigma * clip, so its summed update
    over T steps, divided by sqrt(T) noise units, shifts by ``q sqrt(T) / sigma`` (excluded: 0).
    """
    steps = standard.shape[0]
    summed = standard.sum(axis=0) / math.sqrt(max(1, steps))
    inside, outside = summed[included], summed[~included]
    shift = float(inside.mean() - outside.mean())
    error = math.sqrt(_mean_variance(inside) + _mean_variance(outside))
    claimed = rate * math.sqrt(steps) / sigma if math.isfinite(sigma) and sigma > 0 else math.inf
    z = norm.ppf(1 - MECHANISM_ALPHA)
    low95, high95 = shift - 1.96 * error, shift + 1.96 * error
    return {
        "measured_shift": shift,
        "measured_shift_ci95": [low95, high95],
        "claimed_shift": claimed,
        "shift_ratio": shift / claimed if 0 < claimed < math.inf else None,  # None: no noise claimed
        "mechanism_alpha": MECHANISM_ALPHA,
        "mechanism_fail": bool(shift - z * error > claimed),
    }


def _claim(trainer: Any) -> tuple[float, float, float, float]:
    """(noise multiplier, sample rate, delta, claimed eps) as the trainer's ledger recorded them."""
    entries = [e for e in trainer.ledger.entries if e.mechanism == Mechanism.DP_SGD]
    if not entries:
        return math.inf, float(trainer.sample_rate), float(trainer.delta), math.inf
    first = entries[0]
    claimed = float(trainer.ledger.epsilon(trainer.privacy.accountant, trainer.delta))
    return float(first.noise_multiplier), float(first.sample_rate), float(first.delta), claimed


def _epsilon_at(sigma: float, rate: float, steps: int, delta: float, trainer: Any) -> float:
    """Accountant epsilon of the claimed schedule at noise multiplier ``sigma`` (inf if no noise)."""
    if steps == 0 or math.isnan(sigma) or sigma == math.inf:
        return 0.0
    if sigma <= 0:
        return math.inf
    # PRV needs a grid that grows without bound as sigma shrinks; RDP stays cheap (and looser).
    accountant = trainer.privacy.accountant if sigma >= SMALL_SIGMA else "rdp"
    try:
        return float(epsilon([MechanismBlock(sigma, rate, steps)], delta, accountant))
    except (ValueError, OverflowError, RuntimeError):
        return math.inf


def _robust_scale(updates: np.ndarray) -> np.ndarray:
    """Per-step noise scale over all canaries (median absolute deviation: included ones barely move it)."""
    centre = np.median(updates, axis=1, keepdims=True)
    return np.maximum(1.4826 * np.median(np.abs(updates - centre), axis=1), 1e-30)


def _likelihood_ratio(standard: np.ndarray, rate: float, signal: float) -> np.ndarray:
    """Sum over steps of log((1 - q) + q exp(s x - s^2 / 2)); the plain sum when q = 1."""
    if rate >= 1.0 or signal == 0.0:
        return standard.sum(axis=0)
    terms = np.logaddexp(math.log1p(-rate), math.log(rate) + signal * standard - signal * signal / 2)
    return terms.sum(axis=0)


def _dedupe(trace: list[np.ndarray]) -> list[np.ndarray]:
    """Drop repeated snapshots (a forward without a step, e.g. a preflight, records no update)."""
    kept: list[np.ndarray] = []
    for item in trace:
        if not kept or not np.array_equal(item, kept[-1]):
            kept.append(item)
    return kept
