"""A run beside a baseline run: last-round macro-F1 of each, and their paired difference.

The difference is paired on the test records: a resample draws the same records for both
runs, so it measures the runs, not which records happened to be drawn. That needs both runs
to have been evaluated on the same records; when they were not, the comparison is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from crosslm_secure.errors import RunError
from crosslm_secure.eval.bootstrap import Interval, aligned, paired_difference
from crosslm_secure.eval.predictions import Predictions
from crosslm_secure.report.intervals import CLIENT_PREFIX, LLM_KEY, MEAN_KEY, RunIntervals, evaluation_parts

NOTE = (
    "Difference: this run minus the baseline, last round of each, with a 95% paired-bootstrap interval "
    "(both runs resampled on the same test records, 1,000 seeded resamples)."
)


@dataclass(frozen=True)
class Paired:
    """A run against its baseline: one row per macro-F1 both report."""

    run: str
    baseline: str
    rows: list[PairedRow]


@dataclass(frozen=True)
class PairedRow:
    """One evaluation of both runs: each run's macro-F1 (with interval when kept) and the difference."""

    key: str
    label: str
    run: Interval | float
    baseline: Interval | float
    difference: Interval | None
    """None when a run kept no answers for this evaluation (the points alone are compared)."""


def paired_rows(run: RunIntervals, baseline: RunIntervals) -> Paired:
    """Every macro-F1 both runs report in their last round, side by side with the paired difference.

    Raises:
        RunError: the runs have no round in common to compare, or they were evaluated on different
            test records (or tasks).
    """
    if run.store.root.resolve() == baseline.store.root.resolve():
        raise RunError(f"report: the baseline is {run.store.run_id} itself; pass another run as --baseline")
    rows, base_rows = run.store.rounds(), baseline.store.rounds()
    if not rows or not base_rows:
        empty = run.store.run_id if not rows else baseline.store.run_id
        raise RunError(f"report: run {empty} has no completed round to compare; compare runs that finished one")
    if run.num_labels != baseline.num_labels:
        raise RunError(
            f"report: {run.store.run_id} has {run.num_labels} labels and the baseline {baseline.store.run_id} "
            f"{baseline.num_labels}; a paired difference needs the same task and test set"
        )
    last, base = rows[-1], base_rows[-1]
    keys = [LLM_KEY, MEAN_KEY] + sorted(k for k in last if k.startswith(CLIENT_PREFIX))
    out = []
    for key in keys:
        if key not in last or key not in base:
            continue
        parts = evaluation_parts(last, key)
        if parts != evaluation_parts(base, key):
            raise RunError(
                f"report: {key} of {run.store.run_id} averages clients {parts} but the baseline's averages "
                f"{evaluation_parts(base, key)}; a paired difference needs the same test set"
            )
        kept = []
        for part in parts:
            a, b = run.answers(last["round"], part), baseline.answers(base["round"], part)
            if a is not None and b is not None:
                _same_records(a, b, part, run, baseline)
                kept.append((a, b))
        difference = paired_difference(kept, run.num_labels) if kept and len(kept) == len(parts) else None
        out.append(
            PairedRow(
                key,
                _label(key),
                run.interval(last, key) or float(last[key]),
                baseline.interval(base, key) or float(base[key]),
                difference,
            )
        )
    return Paired(run.store.run_id, baseline.store.run_id, out)


def _same_records(a: Predictions, b: Predictions, key: str, run: RunIntervals, baseline: RunIntervals) -> None:
    try:
        aligned(b, a.records)
    except ValueError as exc:
        raise RunError(
            f"report: {run.store.run_id} and the baseline {baseline.store.run_id} were evaluated on different test "
            f"records for {key} ({exc}); compare against a baseline with the same data, split, seed and eval settings"
        ) from None


def _label(key: str) -> str:
    if key == LLM_KEY:
        return "LLM macro-F1"
    if key == MEAN_KEY:
        return "SLM macro-F1 (mean over clients)"
    return f"SLM macro-F1 {key.removeprefix(CLIENT_PREFIX)}"


def cell(value: Interval | float | None, signed: bool = False) -> str:
    """A value as a table cell: ``0.827 [0.79, 0.86]``, the point alone, or ``-``."""
    if value is None:
        return "-"
    if isinstance(value, Interval):
        return value.text(signed)
    return f"{value:+.3f}" if signed else f"{value:.3f}"
