"""``runs/<id>/report.html``: the run report a researcher reads (self-contained, one file).

Built only from the run folder (metrics, verified ledgers, events, kept synthetic batches),
so ``crosslm report RUN`` rebuilds it at any time. Sections, in reading order: headline,
(with ``--baseline``: the baseline beside it), protections in force, metrics per round
(macro-F1 first, with 95% intervals, and the judge's agreement), privacy spend per client
against the budget, wall time per phase, synthetic data, set-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crosslm_secure.config import Config
from crosslm_secure.errors import CrossLMError
from crosslm_secure.report.baseline import NOTE as PAIRED_NOTE
from crosslm_secure.report.baseline import Paired, cell
from crosslm_secure.report.budgets import ClientBudget, run_budgets
from crosslm_secure.report.html import esc, figure_mpl, page, para, section, table
from crosslm_secure.report.intervals import CLIENT_PREFIX, LLM_KEY, MEAN_KEY, RunIntervals
from crosslm_secure.report.intervals import NOTE as INTERVAL_NOTE
from crosslm_secure.report.plots import draw_rounds, plt
from crosslm_secure.report.protections import protections
from crosslm_secure.report.run_setup import setup_items
from crosslm_secure.report.synthetic import synthetic_section
from crosslm_secure.runstore import RunStore
from crosslm_secure.storage import atomic_write_text

REPORT_FILE = "report.html"
SECTIONS = ("headline", "protections", "metrics", "privacy", "phases", "synthetic", "setup")
"""Section ids of the page, in order (the browser tests look for each)."""


def write_run_page(
    store: RunStore, config: Config, *, intervals: RunIntervals | None = None, paired: Paired | None = None
) -> Path:
    """Write ``report.html`` into the run folder atomically and return its path."""
    path = store.root / REPORT_FILE
    atomic_write_text(path, render_run_page(store, config, intervals=intervals, paired=paired))
    return path


def render_run_page(
    store: RunStore, config: Config, *, intervals: RunIntervals | None = None, paired: Paired | None = None
) -> str:
    rows = store.rounds()
    clients = _clients(rows)
    intervals = intervals or RunIntervals(store, len(config.task.labels))
    sections = [
        f"<h1>Run {esc(store.run_id)}</h1>",
        para(
            f"Method {config.run.method}, task {config.task.name}, {len(clients) or config.partition.clients} "
            f"clients, rounds: {config.run.rounds}, seed {config.run.seed}. Round 0 is the state before any "
            "training. The short text version is summary.md next to this file.",
            "note",
        ),
        _headline(rows, intervals),
        _paired(paired),
        section("protections", "Protections in force", table(["protection", "state"], protections(config, rows))),
        _metrics(rows, clients, intervals),
        _privacy(store, config),
        _phases(rows),
        synthetic_section(store.synthetic_rounds(), config.task.labels),
        _setup(store, config, rows),
    ]
    return page(f"Run report: {store.run_id}", [s for s in sections if s])


def _clients(rows: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith("slm_macro_f1/")})


def _headline(rows: Sequence[dict[str, Any]], intervals: RunIntervals) -> str:
    if not rows:
        return section("headline", "Headline", para("No round completed; there is nothing to report yet."))
    first, last = rows[0], rows[-1]
    items = []
    for key, name in (
        ("slm_macro_f1_mean", "Mean client SLM macro-F1"),
        ("llm_macro_f1", "LLM task macro-F1"),
        ("llm_perplexity", "LLM perplexity on general text (lower is better)"),
    ):
        if key in first and key in last:
            change = last[key] - first[key]
            if key == "llm_perplexity":
                unit = f"{change:+.3f} ({(last[key] / first[key] - 1) * 100:+.1f}%)" if first[key] else f"{change:+.3f}"
                start, end = f"{first[key]:.3f}", f"{last[key]:.3f}"
            else:
                unit = f"{change * 100:+.1f} points"
                start, end = intervals.text(first, key), intervals.text(last, key)
            items.append(
                f"<li>{esc(name)}: <b>{esc(start)}</b> (round 0) &rarr; <b>{esc(end)}</b> "
                f"(round {last['round']}), {esc(unit)}</li>"
            )
    total = sum(r.get("seconds_round", 0.0) for r in rows)
    items.append(f"<li>Wall time over all rounds: {total:.0f} s</li>")
    return section("headline", "Headline", "<ul>" + "".join(items) + "</ul>")


def _metrics(rows: Sequence[dict[str, Any]], clients: list[str], intervals: RunIntervals) -> str:
    if not rows:
        return section("metrics", "Metrics per round", para("No metrics recorded."))
    columns = ["round", "SLM macro-F1 (mean)", "LLM macro-F1", "LLM perplexity", "SLM acc (mean)", "LLM acc"]
    columns += ["judge agrees (kept)", "judge agrees (dropped)"]
    body = []
    for row in rows:
        cells: list[Any] = [row["round"], intervals.text(row, MEAN_KEY), intervals.text(row, LLM_KEY)]
        cells += [row.get("llm_perplexity"), row.get("slm_accuracy_mean"), row.get("llm_accuracy")]
        cells += [row.get("synthetic_judge_agreement_accepted"), row.get("synthetic_judge_agreement_rejected")]
        body.append(cells)
    # One row per client and round: a wide table of clients x intervals would put too many numbers on a line.
    per_client = [
        [row["round"], c, intervals.text(row, CLIENT_PREFIX + c), row.get(f"slm_accuracy/{c}")]
        for row in rows
        for c in clients
        if CLIENT_PREFIX + c in row
    ]
    return section(
        "metrics",
        "Metrics per round (macro-F1 first)",
        para(
            "Macro-F1 averages the F1 of every label, so a model that always answers the majority label scores "
            "low; accuracy is shown after it for reference. " + INTERVAL_NOTE + " Judge agrees: how often an "
            "independent judge (a linear probe the evaluator trains on its own labelled split) gives the intended "
            "label of the synthetic samples that were kept, and of those that were dropped; blank when the round "
            "judged none.",
            "note",
        ),
        table(columns, body),
        table(["round", "client", "SLM macro-F1", "SLM acc"], per_client) if per_client else "",
        figure_mpl(draw_rounds(rows), "metrics per round", "Per round: SLM macro-F1 per client and mean, LLM."),
    )


def _paired(paired: Paired | None) -> str:
    if paired is None:
        return ""
    body = [(r.label, cell(r.run), cell(r.baseline), cell(r.difference, signed=True)) for r in paired.rows]
    return section(
        "baseline",
        f"Against the baseline {paired.baseline} (last round of each)",
        para(PAIRED_NOTE, "note"),
        table(["macro-F1", "this run", "baseline", "difference"], body),
    )


def _privacy(store: RunStore, config: Config) -> str:
    try:
        budgets = run_budgets(store.root)
    except CrossLMError as exc:
        return section("privacy", "Privacy spend", para(f"The client ledgers could not be read: {exc}"))
    rounds = sorted({r for b in budgets for r, _ in b.epsilon_by_round})
    columns = ["client", "budget (epsilon max)"] + [f"round {r}" for r in rounds] + ["left", "delta"]
    body = []
    for b in budgets:
        spent = dict(b.epsilon_by_round)
        cells: list[Any] = [b.client_id, b.epsilon_max] + [spent.get(r) for r in rounds]
        cells += [b.epsilon_left, "-" if b.delta is None else f"{b.delta:.1e}"]
        body.append(cells)
    return section(
        "privacy",
        "Privacy spend per client and round (from the ledgers)",
        para(
            f"Cumulative record-level epsilon of DP-SGD after each round, as recorded in each client's hash-chained "
            f"ledger ({config.privacy.accountant.upper()} accountant), against the client's budget. inf means the "
            "client trained without DP. The released scores are post-processing of the DP model and add nothing "
            "at record level.",
            "note",
        ),
        table(columns, body),
        figure_mpl(_epsilon_figure(budgets), "epsilon per round", "Epsilon spent per client; dashed: the budget."),
    )


def _epsilon_figure(budgets: Sequence[ClientBudget]) -> Any:
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    budget_drawn = False
    for index, b in enumerate(budgets):
        points = [(r, e) for r, e in b.epsilon_by_round if math.isfinite(e)]
        if points:
            ax.plot(*zip(*([(0, 0.0)] + points), strict=True), marker="o", color=f"C{index}", label=b.client_id)
        if math.isfinite(b.epsilon_max) and not budget_drawn:
            ax.axhline(b.epsilon_max, linestyle="--", color="grey", label=f"budget {b.epsilon_max:g}")
            budget_drawn = True
    ax.set(xlabel="round", ylabel="epsilon spent (cumulative)", title="Record-level privacy spend")
    ax.set_ylim(bottom=0)
    ax.set_xticks(sorted({0} | {r for b in budgets for r, _ in b.epsilon_by_round}))
    ax.grid(alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _phases(rows: Sequence[dict[str, Any]]) -> str:
    phases = sorted({k.removeprefix("seconds_") for r in rows for k in r if k.startswith("seconds_")} - {"round"})
    if not phases:
        return section("phases", "Wall time per phase", para("No phase timings recorded."))
    totals = {p: sum(r.get(f"seconds_{p}", 0.0) for r in rows) for p in phases}
    phases.sort(key=lambda p: -totals[p])
    body = [[r["round"]] + [r.get(f"seconds_{p}") for p in phases] + [r.get("seconds_round")] for r in rows]
    body.append(["all"] + [totals[p] for p in phases] + [sum(r.get("seconds_round", 0.0) for r in rows)])
    return section(
        "phases",
        "Wall time per phase (seconds)",
        para("Phases in order of total time; a round's total includes work outside the named phases.", "note"),
        table(["round"] + phases + ["round total"], body, digits=1),
    )


def _setup(store: RunStore, config: Config, rows: Sequence[dict[str, Any]]) -> str:
    events = store.events()
    excluded = [(e["client"], e.get("reason", "")) for e in events if e.get("event") == "client_excluded"]
    stopped = [e.get("reason", "") for e in events if e.get("event") == "run_stopped"]
    items = setup_items(store, config, rows)
    items.append(
        (
            "files",
            "config.yaml, metrics.csv, events.jsonl, server/synthetic/, server/predictions/, "
            "clients/<id>/ledger.jsonl, clients/<id>/predictions/",
        )
    )
    parts = [table(["item", "value"], items)]
    if stopped:
        parts.append(para(f"The run ended early: {stopped[-1]}"))
    if excluded:
        parts.append(table(["excluded client", "reason"], excluded))
    return section("setup", "Set-up", *parts)
