"""``audit/report.html``: the audit report a reviewer reads and signs (one self-contained file).

Order: overall verdict and the executive summary (one plain paragraph per check), provenance
and model hashes, then one section per check (what it found, its tables with counts, its
figures), then the appendix with every raw number. The same numbers are in
``audit/<check>.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crosslm_secure.audit.base import AUDIT_DIR, CheckResult, Table
from crosslm_secure.audit.registry import CheckOutcome
from crosslm_secure.audit.report_sections import (
    VERDICT_MEANINGS,
    body_tables,
    counts,
    dp_sentences,
    explanations,
    merged,
    mia_matrix_html,
    mia_tables,
    summary_sentence,
)
from crosslm_secure.report.html import esc, figure_file, fmt, page, para, section, table

AUDIT_SECTIONS = ("verdict", "summary", "provenance", "appendix")
"""Section ids always present; each check adds ``check-<name>``."""


def render_audit_html(
    run_dir: Path,
    rows: Sequence[tuple[str, str, str, CheckOutcome | None]],
    verdict: str,
    provenance: list[tuple[str, str]],
    models: Sequence[Any],
    settings: Any,
) -> str:
    """The whole page from the verdict rows (name, state, summary, outcome) and provenance."""

    explain = explanations(settings)
    summary_items = "".join(
        f"<li><b>{esc(name)}</b> {_state(state)}: {esc(summary_sentence(state, summary, explain.get(name)))}</li>"
        for name, state, summary, _ in rows
    )
    parts = [
        f"<h1>Audit report: {esc(run_dir.name)}</h1>",
        section(
            "verdict",
            "Verdict",
            f'<p style="font-size:1.25em">Overall: <span class="{_css(verdict)}">{esc(verdict)}</span></p>',
            para(
                " ".join(f"{name}: {meaning}." for name, meaning in VERDICT_MEANINGS.items())
                + " Each check below says what it tested and what its verdict does and does not mean.",
                "note",
            ),
            table(
                ["check", "verdict", "result"],
                [[esc(n), _state(s), esc(summ)] for n, s, summ, _ in rows],
                raw=True,
            ),
        ),
        section("summary", "Executive summary", f"<ul>{summary_items}</ul>"),
        section(
            "provenance",
            "Provenance",
            para("What this report was computed from; a reviewer signs against these hashes.", "note"),
            table(["item", "value"], [[esc(k), f"<code>{esc(v)}</code>"] for k, v in provenance], raw=True),
            "<h3>Model hashes (sha256)</h3>",
            table(
                ["model", "source", "sha256"],
                [[esc(m.role), esc(m.source), f"<code>{esc(m.sha256)}</code>"] for m in models],
                raw=True,
            ),
        ),
    ]
    appendix = []
    for name, state, summary, outcome in rows:
        if outcome is None or outcome.result is None:
            why = "was not run" if outcome is None else "could not run"
            parts.append(section(f"check-{name}", f"{name}: {state.upper()}", para(f"This check {why}: {summary}")))
            continue
        body, extra = _check_body(run_dir, outcome.result)  # extra: tables moved to the appendix
        parts.append(section(f"check-{name}", f"{outcome.result.title}: {state.upper()}", *body))
        appendix.append(_appendix_entry(outcome.result, extra))
    parts.append(
        section(
            "appendix",
            "Appendix: every number",
            para("The raw numbers of each check, as saved in audit/<check>.json.", "note"),
            *appendix,
        )
    )
    return page(f"Audit report: {run_dir.name}", parts)


def _check_body(run_dir: Path, result: CheckResult) -> tuple[list[str], list[Table]]:
    parts = [para(result.summary)]
    if result.findings:
        parts.append("<p><b>Findings</b></p><ul>" + "".join(f"<li>{esc(f)}</li>" for f in result.findings) + "</ul>")
    figures = list(result.figures)
    shown: list[Table] = []
    attack_tables = mia_tables(result)
    if attack_tables:
        shown += attack_tables
        rocs = [f for f in figures if "roc" in f]
        figures = [f for f in figures if f not in rocs]
        grid = "".join(f'<div style="flex:0 1 24%;min-width:280px">{_figure(run_dir, f)}</div>' for f in rocs)
        parts.append(
            # The table takes the full width (three attacks x three metrics), the ROC curves a row below it.
            '<div class="side"><div style="flex:1 1 100%;overflow-x:auto">'
            + mia_matrix_html(merged(attack_tables))
            + para(
                "Intervals: 95% bootstrap. A TPR at a low FPR is shown only where the non-members resolve it "
                "(n x FPR >= 1); an attack at chance has AUC 0.5 and TPR = FPR.",
                "note",
            )
            + f'</div><div style="flex:1 1 100%;display:flex;flex-wrap:wrap;gap:0.3em">{grid}</div></div>'
        )
    sentences = dp_sentences(result.numbers)
    if sentences:
        items = "".join(f"<li>{esc(sentence)}</li>" for sentence in sentences)
        parts.append(f"<p><b>The epsilons shown</b></p><ul>{items}</ul>")
    tables, extra = body_tables(result, shown)
    for t in tables:
        parts += [f"<p><b>{esc(t.title)}</b></p>", table(t.columns, t.rows)]
    counted = counts(result.numbers)
    if counted and not attack_tables:
        parts += ["<p><b>Counts</b></p>", table(["what was counted", "count"], counted)]
    if extra:
        parts.append(para("Longer tables: " + ", ".join(t.title for t in extra) + " (in the appendix).", "note"))
    parts += [_figure(run_dir, f) for f in figures]
    notes = [(k, v) for k, v in result.details.items() if isinstance(v, str)]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in notes) + "</ul>")
    return parts, shown + extra


def _appendix_entry(result: CheckResult, extra: Sequence[Table]) -> str:
    numbers = [(k, fmt(v, 6) if isinstance(v, float) else v) for k, v in result.numbers.items()]
    inner = [table(["number", "value"], numbers)]
    for t in extra:
        inner += [f"<p><b>{esc(t.title)}</b></p>", table(t.columns, t.rows)]
    return (
        f"<details><summary>{esc(result.title)} ({len(result.numbers)} numbers; audit/{esc(result.name)}.json)"
        f"</summary>{''.join(inner)}</details>"
    )


def _figure(run_dir: Path, figure: str) -> str:
    return figure_file(Path(run_dir) / AUDIT_DIR / figure, figure)


def _state(state: str) -> str:
    return f'<span class="{_css(state)}">{esc(state.upper())}</span>'


def _css(state: str) -> str:
    return state.lower().replace(" ", "")
