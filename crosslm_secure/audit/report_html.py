"""``audit/report.html``: the audit report a reviewer reads and signs (one self-contained file).

Order: the scope and sign-off section (what was audited under which threat model, the verdict in
plain words, thresholds as applied, trust anchor, models, privacy spend, the sign-off block with
the hashes signed), the verdict table, the executive summary (one plain paragraph per check),
provenance, then one section per check (what it found, its tables with counts, its figures), then
the appendix with every raw number. The same numbers are in ``audit/<check>.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from crosslm_secure.audit.base import AUDIT_DIR, CheckResult, Table
from crosslm_secure.audit.report_figures import mia_undecided, shown_columns
from crosslm_secure.audit.report_scope import Block
from crosslm_secure.audit.report_sections import (
    VERDICT_MEANINGS,
    body_tables,
    counts,
    dp_sentences,
    merged,
    mia_matrix_html,
    mia_tables,
)
from crosslm_secure.report.html import esc, figure_file, fmt, page, para, section, table

if TYPE_CHECKING:
    from crosslm_secure.audit.report import ReportInputs

AUDIT_SECTIONS = ("scope", "verdict", "summary", "provenance", "appendix")
"""Section ids always present, in order; each check adds ``check-<name>`` before the appendix."""


def render_audit_html(inputs: ReportInputs) -> str:
    """The whole page."""
    from crosslm_secure.audit.report import executive_lines, missing_sentence

    rows = inputs.rows
    summary_items = "".join(
        f"<li><b>{esc(name)}</b> {_state(state)}: {esc(text)}</li>" for name, state, text in executive_lines(inputs)
    )
    parts = [
        f"<h1>Audit report: {esc(inputs.run_id)}</h1>",
        section("scope", "Scope and sign-off", *(_block(block) for block in inputs.first)),
        _verdict_section(inputs),
        section("summary", "Executive summary", f"<ul>{summary_items}</ul>"),
        section(
            "provenance",
            "Provenance",
            para("What this report was computed from; the sign-off block lists the hashes a reviewer signs.", "note"),
            table(["item", "value"], [[esc(k), f"<code>{esc(v)}</code>"] for k, v in inputs.provenance], raw=True),
        ),
    ]
    appendix = []
    for row in rows:
        if row.outcome is None or row.outcome.result is None:
            parts.append(section(f"check-{row.name}", f"{row.name}: {row.state.upper()}", para(missing_sentence(row))))
            continue
        result = row.outcome.result
        body, extra = _check_body(inputs.run_dir, result, row.summary)  # extra: tables moved to the appendix
        parts.append(section(f"check-{row.name}", f"{result.title}: {row.state.upper()}", *body))
        appendix.append(_appendix_entry(result, extra))
    parts.append(
        section(
            "appendix",
            "Appendix: every number",
            para("The raw numbers of each check, as saved in audit/<check>.json.", "note"),
            *appendix,
        )
    )
    return page(f"Audit report: {inputs.run_id}", parts)


def _verdict_section(inputs: ReportInputs) -> str:
    verdict = inputs.verdict
    return section(
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
            [[esc(r.name), _state(r.state), esc(r.summary)] for r in inputs.rows],
            raw=True,
        ),
    )


def _block(block: Block) -> str:
    parts = [f"<h3>{esc(block.heading)}</h3>"] + [para(text) for text in block.paragraphs]
    parts += [table(t.columns, t.rows) for t in block.tables]
    return "\n".join(parts)


def _check_body(run_dir: Path, result: CheckResult, summary: str) -> tuple[list[str], list[Table]]:
    parts = [para(summary)]
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
            + mia_matrix_html(merged(attack_tables), mia_undecided(result))
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
        parts += [f"<p><b>{esc(t.title)}</b></p>", table(shown_columns(t), t.rows)]
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
        inner += [f"<p><b>{esc(t.title)}</b></p>", table(shown_columns(t), t.rows)]
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
