"""Membership-inference metrics: ROC, AUC, TPR at a fixed low FPR, balanced accuracy,
bootstrap intervals, and the log-log ROC plot the literature shows (Carlini et al. 2022).

Scores are "higher = more likely a member". Pure functions except :func:`plot_roc`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOW_FPRS = (0.01, 0.001)
"""FPRs at which TPR is reported (1% and 0.1%)."""

MIN_SIDE = 10
"""Fewest members and fewest non-members whose bootstrap AUC interval can decide a verdict.

A percentile bootstrap of a handful of scores is far too narrow: with 5 non-members that all
score below every member, every resample gives AUC 1, an "interval" of [1, 1]. Below this size
the AUC rule neither passes nor fails a target; the check is not resolvable. (At 10 a side,
chance alone separates the two sides perfectly once in 184,756 draws.)"""


CHANCE_AUC = 0.5


def auc_undecided(members: int, non_members: int, low: float, high: float, limit: float) -> str | None:
    """Why an AUC interval ``[low, high]`` cannot decide against ``limit``, in words; None when it decides.

    It cannot with fewer than :data:`MIN_SIDE` records a side, with an interval wider than the
    gap between chance and the limit (the records cannot tell an attack at chance from one at
    the limit), or with one that reaches both sides of the limit. The one rule for the site
    audit's verdict and the report's "not resolvable" marks.
    """
    sides = f"{members} members and {non_members} non-members"
    width, gap = high - low, limit - CHANCE_AUC
    if min(members, non_members) < MIN_SIDE:
        return f"it rests on {sides}, fewer than {MIN_SIDE} a side"
    if width > gap:
        return (
            f"its interval [{low:.3f}, {high:.3f}] is {width:.3f} wide, more than the {gap:.2g} between chance "
            f"({CHANCE_AUC}) and the limit {limit:g}: {sides} cannot tell an attack at chance from one at the limit"
        )
    if low <= limit < high:
        return f"its interval [{low:.3f}, {high:.3f}] reaches both sides of the limit {limit:g}"
    return None


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided bootstrap interval."""

    value: float
    low: float
    high: float

    def text(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class AttackMetrics:
    """Metrics of one attack on one target, each with a bootstrap interval."""

    auc: Interval
    tpr_at_fpr: dict[float, Interval]
    balanced_accuracy: Interval
    members: int
    non_members: int

    @property
    def decidable(self) -> bool:
        """Whether both sides are large enough (:data:`MIN_SIDE`) for the AUC interval to decide."""
        return min(self.members, self.non_members) >= MIN_SIDE

    def exceeds(self, limit: float) -> bool:
        """The AUC rule: the interval decides and its lower bound is above ``limit``."""
        return self.decidable and self.auc.low > limit

    def undecided(self, limit: float) -> str | None:
        """Why this attack's AUC interval cannot decide against ``limit`` (:func:`auc_undecided`)."""
        return auc_undecided(self.members, self.non_members, self.auc.low, self.auc.high, limit)

    def row(self, target: str, attack: str) -> dict[str, str | int | float]:
        """What the report needs to mark the figure: its names, both sides and the AUC interval."""
        return {
            "target": target,
            "attack": attack,
            "members": self.members,
            "non_members": self.non_members,
            "auc_low": self.auc.low,
            "auc_high": self.auc.high,
        }


def roc_curve(member_scores: np.ndarray, non_member_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` over every threshold, from (0, 0) to (1, 1); ties move both at once."""
    scores = np.concatenate([member_scores, non_member_scores])
    truth = np.concatenate([np.ones(len(member_scores)), np.zeros(len(non_member_scores))])
    order = np.argsort(-scores, kind="stable")
    scores, truth = scores[order], truth[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tp = np.cumsum(truth)[last_of_tie]
    fp = np.cumsum(1 - truth)[last_of_tie]
    tpr = np.r_[0.0, tp / max(1, len(member_scores))]
    fpr = np.r_[0.0, fp / max(1, len(non_member_scores))]
    return fpr, tpr


def auc(member_scores: np.ndarray, non_member_scores: np.ndarray) -> float:
    """P(member score > non-member score) + P(tie) / 2 (Mann-Whitney)."""
    from scipy.stats import rankdata  # lazy, as below: scipy.stats costs every CLI start a second

    scores = np.concatenate([member_scores, non_member_scores])
    ranks = rankdata(scores)
    n1, n0 = len(member_scores), len(non_member_scores)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def tpr_at_fpr(member_scores: np.ndarray, non_member_scores: np.ndarray, target_fpr: float) -> float:
    """The largest TPR among thresholds whose FPR is at most ``target_fpr``."""
    fpr, tpr = roc_curve(member_scores, non_member_scores)
    return float(tpr[fpr <= target_fpr + 1e-12].max())


def balanced_accuracy(member_scores: np.ndarray, non_member_scores: np.ndarray) -> float:
    """Best threshold's ``(TPR + 1 - FPR) / 2``."""
    fpr, tpr = roc_curve(member_scores, non_member_scores)
    return float(((tpr + 1 - fpr) / 2).max())


def attack_metrics(
    member_scores: np.ndarray,
    non_member_scores: np.ndarray,
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> AttackMetrics:
    """All metrics with percentile bootstrap intervals (members and non-members resampled apart).

    Args:
        member_scores: attack scores of members.
        non_member_scores: attack scores of non-members.
        resamples: bootstrap resamples.
        confidence: two-sided level of each interval (e.g. 0.95).
        seed: seeds the resampling.
    """
    members = np.asarray(member_scores, dtype=np.float64)
    others = np.asarray(non_member_scores, dtype=np.float64)

    def measure(m: np.ndarray, o: np.ndarray) -> np.ndarray:
        return np.array([auc(m, o), balanced_accuracy(m, o), *(tpr_at_fpr(m, o, f) for f in LOW_FPRS)])

    point = measure(members, others)
    rng = np.random.default_rng([seed, 7])
    draws = np.array(
        [measure(rng.choice(members, len(members)), rng.choice(others, len(others))) for _ in range(max(1, resamples))]
    )
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
    values = [Interval(float(p), float(lo), float(hi)) for p, lo, hi in zip(point, low, high, strict=True)]
    return AttackMetrics(
        auc=values[0],
        balanced_accuracy=values[1],
        tpr_at_fpr=dict(zip(LOW_FPRS, values[2:], strict=True)),
        members=len(members),
        non_members=len(others),
    )


def dp_test_point(
    member_scores: np.ndarray, non_member_scores: np.ndarray, target_fpr: float, confidence: float
) -> tuple[float, float]:
    """``(TPR lower bound, FPR upper bound)`` at the threshold whose empirical FPR is at most
    ``target_fpr``: one-sided Clopper-Pearson bounds, each at ``(1 + confidence) / 2`` so that
    both hold together at ``confidence``. DP permits ``TPR <= e^eps * FPR + delta`` at every
    threshold, so a TPR lower bound above ``e^eps * (FPR upper bound) + delta`` is evidence
    against the claimed eps that accounts for how few non-members pin the FPR down.
    """
    from scipy.stats import beta  # lazy, as in auc

    members = np.asarray(member_scores, dtype=np.float64)
    others = np.asarray(non_member_scores, dtype=np.float64)
    allowed = int(np.floor(target_fpr * len(others) + 1e-9))
    if allowed >= len(others):
        true, false = len(members), len(others)
    else:
        threshold = np.sort(others)[::-1][allowed]  # members are called above the (allowed+1)-th largest
        true, false = int((members > threshold).sum()), int((others > threshold).sum())
    alpha = (1 - confidence) / 2
    n1, n0 = len(members), len(others)
    tpr_low = 0.0 if true == 0 else float(beta.ppf(alpha, true, n1 - true + 1))
    fpr_high = 1.0 if false >= n0 else float(beta.ppf(1 - alpha, false + 1, n0 - false))
    return tpr_low, fpr_high


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, out: Path) -> Path:
    """ROC curves on log-log axes (where low-FPR attacks show), with the chance diagonal."""
    from crosslm_secure.report.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    floor = 1.0
    for label, (member_scores, non_member_scores) in curves.items():
        fpr, tpr = roc_curve(member_scores, non_member_scores)
        floor = min(floor, 1.0 / max(1, len(non_member_scores)), 1.0 / max(1, len(member_scores)))
        ax.plot(
            np.maximum(fpr, 1e-5),
            np.maximum(tpr, 1e-5),
            label=f"{label} (AUC {auc(member_scores, non_member_scores):.3f})",
        )
    floor = max(floor / 2, 1e-5)
    ax.plot([floor, 1], [floor, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1.05), xlabel="FPR", ylabel="TPR", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, out)
