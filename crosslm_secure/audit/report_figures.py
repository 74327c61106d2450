"""Which figures of a check decide, and how the DP audit's bounds are named, in the report's words.

A check's verdict comes from its own rules; the report adds what a reviewer must not misread:

- an MIA figure whose AUC interval cannot decide (:func:`crosslm_secure.audit.roc.auc_undecided`:
  too few records a side, an interval reaching both sides of ``audit.mia_max_auc``, or one wider
  than the gap between chance and that limit) is *not resolvable*, never a pass;
- the white-box DP audit's "ceiling" is the bound an ideal mechanism at the claimed epsilon
  would typically certify, not a maximum: a bound above it only means more right guesses than
  that mechanism expects. The most the canaries can ever certify (every guess right) is named
  beside it, and a claim above that most means the bound test could not have failed.
"""

from __future__ import annotations

import math
from typing import Any

from crosslm_secure.audit.base import CheckResult, Table
from crosslm_secure.audit.canaries import epsilon_lower_bound
from crosslm_secure.audit.roc import auc_undecided
from crosslm_secure.config import AuditConfig

SETTING_CHECKS = {
    "mia": (
        "reference_models",
        "population_records",
        "confidence",
        "bootstrap",
        "llm_records",
        "seed",
        "mia_max_auc",
        "rmia_a",
        "rmia_gamma",
    ),
    "dp": (
        "canaries",
        "confidence",
        "canary_guess_fraction",
        "whitebox_guess_fraction",
        "dp_client",
        "dp_mode",
        "seed",
        "population_records",
    ),
}
"""The audit settings each check reads (the others ignore ``audit.*``)."""


def applied_overrides(result: CheckResult) -> list[str]:
    """The result's ``--set`` overrides of settings its check reads."""
    read = SETTING_CHECKS.get(result.name, ())
    return [item for item in result.overrides if item.split("=", 1)[0].strip().removeprefix("audit.") in read]


COLUMN_NAMES = {"ceiling": "expected bound at the claim"}
"""Saved table columns the report shows under a clearer name."""


def shown_columns(table: Table) -> list[str]:
    """The table's column names as the report shows them."""
    return [COLUMN_NAMES.get(column, column) for column in table.columns]


def mia_limit(result: CheckResult) -> float:
    """``audit.mia_max_auc`` as the check applied it (the default where it did not record it)."""
    return float(result.settings.get("mia_max_auc", AuditConfig().mia_max_auc))


def mia_undecided(result: CheckResult) -> dict[tuple[str, str], str]:
    """(target, attack) -> why its AUC cannot decide, from the intervals the MIA check saved.

    A result saved without them (an older audit) marks nothing.
    """
    limit = mia_limit(result)
    out = {}
    for row in result.details.get("auc", []):
        why = auc_undecided(row["members"], row["non_members"], row["auc_low"], row["auc_high"], limit)
        if why is not None:
            out[(str(row["target"]), str(row["attack"]))] = why
    return out


def dp_bounds(numbers: dict[str, Any]) -> tuple[float, float] | None:
    """(expected bound at the claim, most the canaries can certify), or None without a canary audit."""
    try:
        canaries, guesses = int(numbers["canaries"]), int(numbers["guesses"])
        delta, confidence = float(numbers["delta"]), float(numbers["confidence"])
    except (KeyError, TypeError, ValueError):
        return None
    most = epsilon_lower_bound(canaries, guesses, guesses, delta, confidence)
    expected = numbers.get("ceiling_epsilon")
    return (float(expected) if isinstance(expected, int | float) else math.nan), most


def dp_undecided(result: CheckResult) -> str | None:
    """Why the DP audit's bound test could not have failed (the claim above the most it can certify)."""
    bounds = dp_bounds(result.numbers)
    claimed = result.numbers.get("claimed_epsilon")
    if bounds is None or not isinstance(claimed, int | float) or not math.isfinite(claimed) or bounds[1] > claimed:
        return None
    checked = " (the mechanism check still decides)" if "mechanism_fail" in result.numbers else ""
    return (
        f"even all {result.numbers['guesses']} guesses right certify only {bounds[1]:.2f}, not above the claimed "
        f"{claimed:.2f}, so the bound test could not have failed{checked}"
    )


def not_resolvable(result: CheckResult) -> list[str]:
    """One line per figure of a check that cannot decide, naming it and why."""
    lines = [f"{target} {attack} AUC: {why}" for (target, attack), why in mia_undecided(result).items()]
    dp = dp_undecided(result) if result.name == "dp" else None
    client = result.numbers.get("client", "the audited client")
    return lines + ([f"{client}'s DP epsilon lower bound: {dp}"] if dp else [])


def bound_sentences(numbers: dict[str, Any]) -> list[str]:
    """What the DP audit's bound is measured against: the expected bound at the claim and the most it can show."""
    bounds = dp_bounds(numbers)
    lower = numbers.get("empirical_epsilon_lower_bound")
    if bounds is None or not isinstance(lower, int | float):
        return []
    expected, most = bounds
    out = [
        f"Most these canaries can certify {most:.2f}: the bound with all {numbers['guesses']} guesses right "
        f"({numbers['canaries']} canaries). No run can show more, whatever its epsilon."
    ]
    if math.isfinite(expected):
        out.append(
            f"Expected bound at the claim {expected:.2f} (saved as the 'ceiling'): what an ideal mechanism at the "
            "claimed epsilon typically certifies, at the number of right guesses it expects (rounded down). It is not "
            "a maximum: "
            + (
                f"here the bound {lower:.2f} is above it because {numbers.get('correct')} guesses were right, more "
                "than that expectation; that is chance or a stronger signal, and only a bound above the claim fails."
                if lower > expected + 1e-9
                else f"here the bound {lower:.2f} is at or below it."
            )
        )
    return out


def display_summary(result: CheckResult) -> str:
    """The check's summary as the report shows it: a white-box DP summary names its bounds plainly."""
    n = result.numbers
    bounds = dp_bounds(n) if result.name == "dp" and n.get("mode") == "white-box" else None
    if bounds is None or not isinstance(n.get("claimed_epsilon"), int | float):
        return result.summary
    claimed = n["claimed_epsilon"]
    shift = n.get("shift_ratio")
    return (
        f"{n.get('client')} (white-box, gradient canaries): {n.get('correct')}/{n.get('guesses')} guesses right -> "
        f"epsilon >= {n['empirical_epsilon_lower_bound']:.2f} ({float(n['confidence']):.0%}) vs claimed "
        f"{'inf' if math.isinf(claimed) else f'{claimed:.2f}'}; an ideal mechanism at the claim would typically "
        f"certify {bounds[0]:.2f}, and all guesses right {bounds[1]:.2f} (the most these canaries can show)"
        + (f". Measured canary shift {shift:.2f}x the claimed mechanism's" if isinstance(shift, int | float) else "")
        + ("; FAIL." if result.findings else "; consistent with the claim.")
    )
