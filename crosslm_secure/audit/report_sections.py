"""What the audit report says in words: the executive summary, the MIA table, the DP epsilons.

Rendered from the saved :class:`CheckResult` of each check, by its shape rather than its
name where possible: every MIA table row (any attack, e.g. LiRA) becomes a cell of the
client x attack table, every check gets a summary sentence (a check without a written
explanation falls back to its own title and summary), and every table or number not shown
in the body goes to the appendix. So a new attack or a new sub-check appears without code
changes here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crosslm_secure.audit.base import CheckResult, Table
from crosslm_secure.audit.report_figures import applied_overrides, bound_sentences, display_summary, not_resolvable
from crosslm_secure.audit.trust import SELF_ATTESTED, SELF_ATTESTED_SENTENCE
from crosslm_secure.report.html import esc

VERDICT_MEANINGS = {
    "PASS": "every check ran and passed, every signature checked against the registry the reviewer pinned",
    "SELF-ATTESTED": f"every check passed, but {SELF_ATTESTED_SENTENCE}; this is not a PASS",
    "FAIL": "at least one check failed",
    "INCOMPLETE": "a check could not run or was not run, or a client's site audit is missing or not resolvable",
}
"""The overall verdicts (``crosslm audit`` exit codes 0, 3, 1, 2) in words."""

BODY_TABLE_ROWS = 12
"""Tables longer than this move to the appendix; the body keeps what a reviewer reads."""


@dataclass(frozen=True)
class Explanation:
    """What a check tests, what makes it fail, and what its PASS does and does not mean."""

    tested: str
    threshold: str
    passing_means: str
    not_means: str


def explanations(settings: Any, privacy: Any = None) -> dict[str, Explanation]:
    """The plain-words explanation of each known check, with the thresholds as applied filled in.

    Args:
        settings: the audit settings a check applied (its saved ``settings`` mapping, or an AuditConfig).
        privacy: the run's privacy settings, for the ledger check's budget and the run's target epsilon.
    """
    max_auc = _setting(settings, "mia_max_auc", 0.6)
    confidence = _setting(settings, "confidence", 0.95)
    budget = ""
    if privacy is not None:
        target = privacy.target_epsilon if privacy.dp else None
        aim = "no target (no DP)" if target is None or math.isinf(target) else f"target epsilon {target:g}"
        budget = f" (budget privacy.epsilon_max {privacy.epsilon_max:g}; the run's {aim})"
    return {
        "mia": Explanation(
            "whether an attacker holding a client's trained SLM (or the server's LLM) can tell its training "
            "records from similar records it never saw",
            f"it fails when an attack's AUC lower {confidence:.0%} bound exceeds {max_auc:g}, or when its TPR at "
            "1% or 0.1% FPR is higher than the claimed epsilon allows (TPR <= e^eps x FPR + delta)",
            "these attacks, on this many records, did no better than the threshold and the claimed epsilon allow",
            "that no attack could: stronger attacks or more records may do better; it is evidence, not proof",
        ),
        "dp": Explanation(
            "whether one client's DP-SGD gives the privacy its accountant claims: the training is re-run with "
            "canaries, each included by a coin flip, and the auditor guesses which were in",
            f"it fails when the empirical epsilon lower bound ({confidence:.0%} confidence) exceeds the claimed "
            "epsilon",
            "no violation of the claimed epsilon was detected",
            "that the real epsilon equals the claim: a one-run lower bound sits far below the claim, so a PASS "
            "cannot show the accounting is tight",
        ),
        "protocol": Explanation(
            "whether the server's saved files and message log hold only what the protocol allows: a public CKKS "
            "context without secret key, no per-client score vector, 128-bit HE parameters, every message signed "
            "and accepted once",
            "it fails on any finding in any sub-check",
            "the run folder's server artefacts show none of these leaks",
            "that a live server kept nothing else in memory or elsewhere: it checks what was written",
        ),
        "ledger": Explanation(
            "whether each client's privacy ledger is intact (hash chain) and its epsilons are right, recomputed "
            "with an independent library (dp-accounting)",
            f"it fails on a broken chain, a recomputation outside tolerance, or a client over its budget{budget}",
            "the recorded privacy spend is intact, reproducible and within budget",
            "that the recorded mechanism is what actually ran; that is the DP audit's question",
        ),
    }


def _setting(settings: Any, key: str, default: Any) -> Any:
    if isinstance(settings, dict):
        return settings.get(key, default)
    return getattr(settings, key, default)


def summary_sentence(state: str, summary: str, explain: Explanation | None) -> str:
    """One plain paragraph for the executive summary: tested, threshold, result, what it means."""
    if state not in ("pass", "fail", SELF_ATTESTED) or explain is None:
        return summary
    meanings = {
        "pass": f"PASS means {explain.passing_means}; it does not mean {explain.not_means}.",
        SELF_ATTESTED: f"It passed, but {SELF_ATTESTED_SENTENCE}.",
        "fail": "FAIL means the run does not meet this check; the findings in its section say where.",
    }
    return f"Tested {explain.tested}; {explain.threshold}. Result: {summary} {meanings[state]}"


def executive_line(state: str, summary: str, result: CheckResult | None, fallback: Any, privacy: Any) -> str:
    """A check's executive-summary paragraph with its thresholds as applied, its overrides and its
    figures that could not decide (``fallback``: the run's audit settings, for results that did not
    record theirs)."""
    if result is None:
        return summary
    explain = explanations(result.settings or fallback, privacy).get(result.name)
    text = summary_sentence(state, display_summary(result), explain)
    overrides = applied_overrides(result)
    if overrides:
        text += f" Ran with --set {', '.join(overrides)} (overrides of the run's config)."
    undecided = not_resolvable(result)
    if undecided:
        text += f" Not resolvable, so not a pass: {'; '.join(undecided)}."
    return text


# -- MIA: one table, target x attack --------------------------------------------------------

_TPR_COLUMN = re.compile(r"TPR@([0-9.]+)%FPR")


def mia_tables(result: CheckResult) -> list[Table]:
    """The check's tables of attacks: a column ``AUC`` and ``TPR@x%FPR`` columns, the same columns
    as the first such table (a later attack saved as its own table joins the same matrix)."""
    found = [t for t in result.tables if "AUC" in t.columns and any(_TPR_COLUMN.fullmatch(c) for c in t.columns)]
    return [t for t in found if t.columns == found[0].columns]


def merged(tables: Sequence[Table]) -> Table:
    return Table(tables[0].title, tables[0].columns, [row for t in tables for row in t.rows])


def mia_matrix_html(table: Table, undecided: dict[tuple[str, str], str] | None = None) -> str:
    """Targets as rows, attacks as column groups of AUC and TPR at each low FPR, with intervals.

    A TPR at FPR f is printed only when the non-members resolve it (n x f >= 1: at least one
    non-member can be a false positive); otherwise the cell says so. An AUC in ``undecided``
    ((target, attack) -> why, :func:`~crosslm_secure.audit.report_figures.mia_undecided`) is marked
    not resolvable.
    """
    undecided = undecided or {}
    col = {name: i for i, name in enumerate(table.columns)}
    tpr_columns = [c for c in table.columns if _TPR_COLUMN.fullmatch(c)]
    # "n" (older runs: per side) or "members / non-members" (both counts; the non-members resolve an FPR)
    n_column = next((c for c in table.columns if c.startswith("n") or "non-members" in c), None)
    targets: list[str] = []
    attacks: list[str] = []
    cells: dict[tuple[str, str], list[str]] = {}
    sizes: dict[str, str] = {}
    for row in table.rows:
        target, full_attack = row[col.get("target", 0)], row[col.get("attack", 1)]
        attack = _attack_name(full_attack)
        targets += [target] if target not in targets else []
        attacks += [attack] if attack not in attacks else []
        n = _non_members(row[col[n_column]]) if n_column else None
        sizes[target] = str(row[col[n_column]]) if n is not None and n_column else "?"
        values = [esc(row[col["AUC"]])]
        if (str(target), str(full_attack)) in undecided:
            values[0] += (
                f'<br><span class="muted">not resolvable: {esc(undecided[(str(target), str(full_attack))])}</span>'
            )
        for name in tpr_columns:
            fpr = float(_TPR_COLUMN.fullmatch(name).group(1)) / 100  # type: ignore[union-attr]
            if n is None or n * fpr < 1:
                values.append(f'<span class="muted">not resolvable with n={esc(n if n is not None else "?")}</span>')
            else:
                values.append(esc(row[col[name]]))
        cells[(target, attack)] = values
    metrics = ["AUC [95% CI]"] + [f"TPR@{_TPR_COLUMN.fullmatch(c).group(1)}%FPR [CI]" for c in tpr_columns]  # type: ignore[union-attr]
    head1 = '<th rowspan="2">target</th><th rowspan="2">members / non-members (n)</th>' + "".join(
        f'<th colspan="{len(metrics)}">{esc(a)}</th>' for a in attacks
    )
    head2 = "".join(f"<th>{esc(m)}</th>" for _ in attacks for m in metrics)
    body = []
    for target in targets:
        row_cells = [f"<td>{esc(target)}</td>", f'<td class="num">{esc(sizes[target])}</td>']
        for attack in attacks:
            values = cells.get((target, attack), ["-"] * len(metrics))
            row_cells += [f"<td>{v}</td>" for v in values]
        body.append("<tr>" + "".join(row_cells) + "</tr>")
    return f'<table class="mia"><thead><tr>{head1}</tr><tr>{head2}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _attack_name(text: str) -> str:
    """``LOSS (LoRA round-2)`` -> ``LOSS``: the target's detail stays out of the attack's column."""
    return str(text).split(" (", 1)[0]


def _non_members(text: str) -> int | None:
    """The non-member count of a size cell: ``2000``, or the last of ``600 / 2000``."""
    found = re.findall(r"\d+", str(text))
    return int(found[-1]) if found else None


# -- DP: what each epsilon is ---------------------------------------------------------------


def dp_sentences(numbers: dict[str, Any]) -> list[str]:
    """One sentence per epsilon the DP check shows (empty when it shows none)."""
    out = []
    lower = _float(numbers.get("empirical_epsilon_lower_bound"))
    claimed = _float(numbers.get("claimed_epsilon"))
    ledger = _float(numbers.get("ledger_epsilon"))
    client = numbers.get("client", "the audited client")
    if lower is not None:
        out.append(
            f"Empirical lower bound {lower:.2f}: from {numbers.get('correct', '?')} of {numbers.get('guesses', '?')} "
            f"canary guesses right, no mechanism with a smaller epsilon could produce this at "
            f"{_float(numbers.get('confidence')) or 0.95:.0%} confidence. It bounds the privacy loss from below; "
            "it is not an estimate of it."
        )
        out += bound_sentences(numbers)
    if claimed is not None:
        out.append(
            f"Claimed {_eps(claimed)}: the epsilon the accountant gives for the audit's own re-training of "
            f"{client} (noise multiplier {_num(numbers.get('noise_multiplier'))}, sample rate "
            f"{_num(numbers.get('sample_rate'))}, delta {_num(numbers.get('delta'))}, {numbers.get('rounds', '?')} "
            f"rounds, on the client's records plus {numbers.get('canaries_included', '?')} included canaries). "
            "The lower bound is tested against this one, because it is the mechanism the audit ran."
        )
    if ledger is not None:
        text = (
            f"Ledger {_eps(ledger)}: what {client}'s real training recorded in its privacy ledger for this run. "
            "The audit copies the ledger's noise multiplier, sample rate, delta and steps per round (steps // "
            "rounds), so the two agree unless the ledger holds steps the re-training does not repeat"
        )
        if claimed is not None and math.isfinite(claimed) and math.isfinite(ledger) and ledger > 0:
            gap = abs(claimed - ledger) / ledger
            relation = "agree" if gap < 0.01 else "differ"
            text += f"; here they {relation} (relative difference {gap:.2%})."
        else:
            text += "."
        out.append(text)
    return out


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if value == "inf":
        return math.inf
    return None


def _eps(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f}"


def _num(value: Any) -> str:
    number = _float(value)
    if number is None:
        return "?"
    return f"{number:.4g}"


def counts(numbers: dict[str, Any]) -> list[tuple[str, int]]:
    """The integer numbers of a check (what it counted), in their saved order."""
    return [
        (key.replace("_", " "), value)
        for key, value in numbers.items()
        if isinstance(value, int) and not isinstance(value, bool)
    ]


def body_tables(result: CheckResult, shown: Sequence[Table]) -> tuple[list[Table], list[Table]]:
    """The check's tables split into (body, appendix): short ones in the body, long ones after."""
    rest = [t for t in result.tables if all(t is not s for s in shown)]
    return [t for t in rest if len(t.rows) <= BODY_TABLE_ROWS], [t for t in rest if len(t.rows) > BODY_TABLE_ROWS]
