"""``runs/<id>/report.html``: the run report a researcher reads (self-contained, one file).

Built only from the run folder (metrics, verified ledgers, events, kept synthetic batches),
so ``crosslm report RUN`` rebuilds it at any time. Sections, in reading order: headline,
protections in force, metrics per round (macro-F1 first), privacy spend per client against
the budget, wall time per phase, synthetic data, set-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crosslm_secure.config import Config
from crosslm_secure.errors import CrossLMError
from crosslm_secure.report.budgets import ClientBudget, run_budgets
from crosslm_secure.report.html import esc, figure_mpl, fmt, page, para, section, table
from crosslm_secure.report.plots import draw_rounds, plt
from crosslm_secure.report.protections import protections
from crosslm_secure.report.synthetic import synthetic_section
from crosslm_secure.runstore import RunStore
from crosslm_secure.storage import atomic_write_text

REPORT_FILE = "report.html"
SECTIONS = ("headline", "protections", "metrics", "privacy", "phases", "synthetic", "setup")
"""Section ids of the page, in order (the browser tests look for each)."""


def write_run_page(store: RunStore, config: Config) -> Path:
    """Write ``report.html`` into the run folder atomically and return its path."""
    path = store.root / REPORT_FILE
    atomic_write_text(path, render_run_page(store, config))
    return path


def render_run_page(store: RunStore, config: Config) -> str:
    rows = store.rounds()
    clients = _clients(rows)
    sections = [
        f"<h1>Run {esc(store.run_id)}</h1>",
        para(
            f"Method {config.run.method}, task {config.task.name}, {len(clients) or config.partition.clients} "
            f"clients, rounds: {config.run.rounds}, seed {config.run.seed}. Round 0 is the state before any "
            "training. The short text version is summary.md next to this file.",
            "note",
        ),
        _headline(rows),
        section("protections", "Protections in force", table(["protection", "state"], protections(config, rows))),
        _metrics(rows, clients),
        _privacy(store, config),
        _phases(rows),
        synthetic_section(store.synthetic_rounds(), config.task.labels),
        _setup(store, config),
    ]
    return page(f"Run report: {store.run_id}", sections)


def _clients(rows: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith("slm_macro_f1/")})


def _headline(rows: Sequence[dict[str, Any]]) -> str:
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
            unit = f"{change:+.3f}" if key == "llm_perplexity" else f"{change * 100:+.1f} points"
            items.append(
                f"<li>{esc(name)}: <b>{first[key]:.3f}</b> (round 0) &rarr; <b>{last[key]:.3f}</b> "
                f"(round {last['round']}), {esc(unit)}</li>"
            )
    total = sum(r.get("seconds_round", 0.0) for r in rows)
    items.append(f"<li>Wall time over all rounds: {total:.0f} s</li>")
    return section("headline", "Headline", "<ul>" + "".join(items) + "</ul>")


def _metrics(rows: Sequence[dict[str, Any]], clients: list[str]) -> str:
    if not rows:
        return section("metrics", "Metrics per round", para("No metrics recorded."))
    columns = ["round", "SLM macro-F1 (mean)"] + [f"macro-F1 {c}" for c in clients]
    columns += ["LLM macro-F1", "LLM perplexity", "SLM acc (mean)", "LLM acc"]
    body = []
    for row in rows:
        cells: list[Any] = [row["round"], row.get("slm_macro_f1_mean")]
        cells += [row.get(f"slm_macro_f1/{c}") for c in clients]
        cells += [row.get("llm_macro_f1"), row.get("llm_perplexity"), row.get("slm_accuracy_mean")]
        cells += [row.get("llm_accuracy")]
        body.append(cells)
    return section(
        "metrics",
        "Metrics per round (macro-F1 first)",
        para(
            "Macro-F1 averages the F1 of every label, so a model that always answers the majority label scores "
            "low; accuracy is shown after it for reference.",
            "note",
        ),
        table(columns, body),
        figure_mpl(draw_rounds(rows), "metrics per round", "Per round: SLM macro-F1 per client and mean, LLM."),
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


def _setup(store: RunStore, config: Config) -> str:
    events = store.events()
    excluded = [(e["client"], e.get("reason", "")) for e in events if e.get("event") == "client_excluded"]
    stopped = [e.get("reason", "") for e in events if e.get("event") == "run_stopped"]
    items = [
        ("method", config.run.method),
        ("rounds", config.run.rounds),
        ("seed", config.run.seed),
        ("clients", f"{config.partition.clients} ({config.partition.scheme})"),
        ("LLM", config.llm.model),
        ("SLMs", ", ".join(sorted({config.slm_for(c).model for c in config.client_ids()}))),
        ("data", config.data.source + (f" ({config.data.embedded})" if config.data.source == "embedded" else "")),
        ("feedback aggregator", config.feedback.aggregator),
        ("files", "config.yaml, metrics.csv, events.jsonl, server/synthetic/, clients/<id>/ledger.jsonl"),
    ]
    parts = [table(["item", "value"], [(k, fmt(v)) for k, v in items])]
    if stopped:
        parts.append(para(f"The run ended early: {stopped[-1]}"))
    if excluded:
        parts.append(table(["excluded client", "reason"], excluded))
    return section("setup", "Set-up", *parts)
