"""Ledger audit (issue #5, part 4): each client's privacy ledger, re-checked independently.

For every configured client's ``clients/<id>/ledger.jsonl``:

1. the hash chain and head verify, the ledger is complete (not missing, empty or headless),
   every entry is of this run (``run.json``'s id) and signed by the client's key (the pinned
   registry's with ``--registry``, else the one ``run.json`` names: self-attested, audit/trust.py);
   the entries agree with the resolved config and with the rounds ``state.json`` and the
   transcript show (audit/ledger_crosschecks.py); each problem is a finding, not a crash;
2. every entry's recorded cumulative epsilon is recomputed from the recorded mechanisms
   with an accountant independent of the one that recorded it: Google's ``dp-accounting``
   (RDP for the recorded ``rdp`` value, PLD for the recorded ``prv`` value), within a stated
   tolerance (audit/ledger_epsilon.py);
3. no client's record-level epsilon exceeds ``privacy.epsilon_max`` (recorded and recomputed),
   and every entry records the budget the run was configured with.

Record-level (DP-SGD) and client-level (score releases) entries are composed separately,
as the ledger does (SECURITY.md); the budget governs the record level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import dp_accounting

from crosslm_secure.audit.base import AuditError, CheckResult, Outcome, Table
from crosslm_secure.audit.ledger_crosschecks import (
    claim_findings,
    config_findings,
    load_verified_ledgers,
    round_findings,
)
from crosslm_secure.audit.ledger_epsilon import (
    ABSOLUTE_SLACK,
    PLD_TOLERANCE,
    RDP_TOLERANCE,
    Recomputation,
    recompute_entry,
)
from crosslm_secure.audit.pipeline import Audit, run_audit
from crosslm_secure.audit.progress import progress_bar
from crosslm_secure.audit.runinfo import run_config
from crosslm_secure.audit.trust import TrustAnchor, identity_findings
from crosslm_secure.config import AuditConfig, Config
from crosslm_secure.privacy.ledger import LEDGER_FILE, LedgerEntry, LedgerError, ledger_path
from crosslm_secure.privacy.noise_source import SEEDED_WARNING
from crosslm_secure.runstore import RunStore


def run_ledger_audit(
    run_dir: Path, settings: AuditConfig | None = None, *, progress: bool = True, anchor: TrustAnchor | None = None
) -> CheckResult:
    """Verify each client's ledger chain, recompute its epsilon independently, check the budget.

    Args:
        run_dir: ``runs/<id>``.
        settings: unused (the ledger audit has no knobs); accepted for a uniform signature.
        progress: show a progress bar over the recomputations.
        anchor: the keys signatures are checked against (default: ``run.json``'s, self-attested).

    Raises:
        AuditError: not a run folder, or it holds no client ledgers.
    """
    return run_audit(LedgerAudit(progress=progress, anchor=anchor or TrustAnchor()), run_dir, settings)


@dataclass
class LedgerRun:
    """What the ledger audit reads: the run's config and store, and every ledger it should hold."""

    root: Path
    config: Config
    store: RunStore
    ledgers: dict[str, Path]
    """Client id -> its ledger file, for every configured client and every ledger found."""
    strangers: list[str]
    """Ledgers of ids that are not clients of the run."""


@dataclass
class LedgerEvidence:
    """The verified entries, what was found in them, and every recomputed epsilon."""

    entries_by_client: dict[str, list[LedgerEntry]]
    findings: list[str]
    verified: list[str]
    recomputations: list[Recomputation]


@dataclass
class LedgerAudit(Audit[LedgerRun, LedgerEvidence]):
    """Chains, signatures and cross-checks of each ledger; epsilon recomputed; budgets."""

    progress: bool = True
    anchor: TrustAnchor = field(default_factory=TrustAnchor)

    def open(self, run_dir: Path, settings: AuditConfig | None) -> LedgerRun:
        del settings  # the ledger audit has no knobs
        config = run_config(run_dir)
        found = {p.parent.name: p for p in sorted((run_dir / "clients").glob(f"*/{LEDGER_FILE}"))}
        if not found:
            raise AuditError(
                f"audit ledger: {run_dir} has no clients/*/{LEDGER_FILE}; audit a run in which clients trained"
            )
        everyone = sorted(set(found) | set(config.client_ids()))
        strangers = sorted(set(found) - set(config.client_ids()))
        ledgers = {client_id: ledger_path(run_dir, client_id) for client_id in everyone}
        return LedgerRun(run_dir, config, RunStore(run_dir), ledgers, strangers)

    def measure(self, run: LedgerRun) -> LedgerEvidence:
        identities, findings = _trusted_identities(run.store, self.anchor)
        entries_by_client, ledger_findings = load_verified_ledgers(run.store, run.config, identities)
        findings += ledger_findings
        for client_id in run.strangers:
            findings.append(
                f"clients/{client_id}/{LEDGER_FILE}: a ledger of {client_id}, who is not a client of this run"
            )
        findings += config_findings(run.config, entries_by_client)
        findings += round_findings(run.root, run.config, entries_by_client)
        findings += claim_findings(run.root, entries_by_client, identities)
        # A ledger "verifies" when it loads and nothing above was found in it (signatures, run, rounds, claims).
        verified = [c for c in entries_by_client if not any(f"clients/{c}/{LEDGER_FILE}" in f for f in findings)]
        findings += seeded_noise_findings(run.config, entries_by_client)
        work = [(client_id, n, entry) for client_id, es in entries_by_client.items() for n, entry in enumerate(es, 1)]
        recomputations: list[Recomputation] = []
        for client_id, line, entry in progress_bar(work, "recomputing epsilon", enabled=self.progress):
            recomputations += recompute_entry(client_id, line, entry, entries_by_client[client_id][: line - 1])
        findings += [_mismatch(item) for item in recomputations if not item.matches]
        return LedgerEvidence(entries_by_client, findings, verified, recomputations)

    def judge(self, run: LedgerRun, evidence: LedgerEvidence) -> Outcome:
        epsilon_max = run.config.privacy.epsilon_max
        entries_by_client, recomputations = evidence.entries_by_client, evidence.recomputations
        rows, budget_findings, over = _budget_rows(
            entries_by_client, recomputations, epsilon_max, run.ledgers, run.root
        )
        findings = evidence.findings + budget_findings
        for client_id in run.ledgers:
            if client_id not in entries_by_client:
                rows.append([client_id, "-", "-", "-", "-", f"{epsilon_max:g}", "fail (ledger does not verify)"])
        rows.sort(key=lambda r: r[0])
        numbers = _numbers(run, evidence, over)
        summary = (
            f"{len(evidence.verified)} of {len(run.ledgers)} ledgers verify; {len(recomputations)} recorded epsilons "
            f"recomputed with dp-accounting, {numbers['recomputations_mismatched']} outside tolerance; "
            f"max record-level epsilon {_fmt(_spent_max(entries_by_client))} of budget {epsilon_max:g}, "
            f"{over} client(s) over budget."
        )
        result = CheckResult(
            name="ledger",
            title="Ledger audit: hash chains, independent epsilon, budgets",
            verdict="pass" if not findings else "fail",
            summary=summary,
            numbers=numbers,
            tables=[_client_table(rows), _recomputation_table(recomputations)],
            findings=findings,
            details={
                "tolerances": {"rdp_vs_rdp": RDP_TOLERANCE, "prv_vs_pld": PLD_TOLERANCE, "absolute": ABSOLUTE_SLACK},
                "independent_accountant": f"dp-accounting {getattr(dp_accounting, '__version__', '0.6.0')}",
                **self.anchor.details(),
            },
        )
        points = [r for r in recomputations if r.unit == "record" and math.isfinite(r.recorded)]
        return Outcome(result, {"ledger_epsilon.png": partial(_plot, points, epsilon_max)} if points else {})


def seeded_noise_findings(config: Config, entries_by_client: dict[str, list[LedgerEntry]]) -> list[str]:
    """One finding when the run's noise was seeded (``privacy.noise_source: seeded``), in its config or a ledger."""
    seeded = sorted(c for c, entries in entries_by_client.items() if any(e.noise_source == "seeded" for e in entries))
    if not seeded and config.privacy.noise_source != "seeded":
        return []
    where = f"the ledgers of {', '.join(seeded)}" if seeded else "config.yaml"
    return [f"{where}: {SEEDED_WARNING}"]


def _mismatch(item: Recomputation) -> str:
    return (
        f"clients/{item.client_id}/{LEDGER_FILE} line {item.line}: recorded {item.accountant} epsilon "
        f"{_fmt(item.recorded)} but dp-accounting gives {_fmt(item.recomputed)} "
        f"(rel. diff {_fmt(item.relative_difference)}, tolerance {item.tolerance:g})"
    )


def _spent_max(entries_by_client: dict[str, list[LedgerEntry]]) -> float:
    """The largest record-level epsilon any client spent (0 when none trained privately)."""
    spent = [
        record[-1].spent()
        for record in ([e for e in es if e.unit == "record"] for es in entries_by_client.values())
        if record
    ]
    return max(spent, default=0.0)


def _numbers(run: LedgerRun, evidence: LedgerEvidence, over: int) -> dict[str, Any]:
    recomputations = evidence.recomputations
    return {
        "clients": len(run.ledgers),
        "ledgers_verified": len(evidence.verified),
        "entries": sum(len(e) for e in evidence.entries_by_client.values()),
        "recomputations": len(recomputations),
        "recomputations_mismatched": sum(not r.matches for r in recomputations),
        "max_relative_difference": _json_number(max((r.relative_difference for r in recomputations), default=0.0)),
        "epsilon_max": run.config.privacy.epsilon_max,
        "epsilon_spent_max": _json_number(_spent_max(evidence.entries_by_client)),
        "clients_over_budget": over,
    }


def _client_table(rows: list[list[str]]) -> Table:
    return Table(
        "Per client (record-level epsilon, the budget's accountant)",
        ["client", "recorded eps", "recomputed eps", "rel. diff", "entries", "budget", "verdict"],
        rows,
    )


def _recomputation_table(recomputations: list[Recomputation]) -> Table:
    return Table(
        "Every recomputation",
        ["client", "line", "round", "mechanism", "accountant", "recorded", "dp-accounting", "rel. diff", "ok"],
        [
            [
                r.client_id,
                str(r.line),
                str(r.round),
                r.mechanism,
                f"{r.accountant} vs {'RDP' if r.accountant == 'rdp' else 'PLD'}",
                _fmt(r.recorded),
                _fmt(r.recomputed),
                _fmt(r.relative_difference),
                "yes" if r.matches else "NO",
            ]
            for r in recomputations
        ],
    )


def _trusted_identities(store: RunStore, anchor: TrustAnchor) -> tuple[dict[str, list[Any]], list[str]]:
    """The keys ledger entries and claims are checked against, and why ``run.json`` disagrees with them."""
    try:
        identities = anchor.identities(store)
    except LedgerError as exc:
        return {}, [str(exc)]
    return identities, identity_findings(store, anchor)


def _budget_rows(
    entries_by_client: dict[str, list[LedgerEntry]],
    recomputations: list[Recomputation],
    epsilon_max: float,
    ledgers: dict[str, Path],
    run_dir: Path,
) -> tuple[list[list[str]], list[str], int]:
    rows: list[list[str]] = []
    findings: list[str] = []
    over = 0
    for client_id, entries in entries_by_client.items():
        name = str(ledgers[client_id].relative_to(run_dir))
        record = [e for e in entries if e.unit == "record"]
        if not record:
            rows.append([client_id, "0", "0", "-", str(len(entries)), f"{epsilon_max:g}", "pass (no private training)"])
            continue
        last = record[-1]
        budget_accountant = last.accountant
        mine = [
            r
            for r in recomputations
            if r.client_id == client_id and r.unit == "record" and r.accountant == budget_accountant
        ]
        final = max(mine, key=lambda r: r.line) if mine else None
        recorded = last.spent()
        recomputed = final.recomputed if final else math.nan
        problems = []
        for entry in record:
            if entry.epsilon_max != epsilon_max:
                problems.append(
                    f"{name}: round {entry.round} was checked against epsilon_max {entry.epsilon_max:g}, "
                    f"the run's privacy.epsilon_max is {epsilon_max:g}"
                )
        if math.isinf(recorded):
            problems.append(f"{name}: {client_id} trained on private data without DP (epsilon = inf), over any budget")
        elif recorded > epsilon_max or (final is not None and recomputed > epsilon_max * (1 + final.tolerance)):
            problems.append(
                f"{name}: {client_id} spent epsilon {_fmt(recorded)} (recomputed {_fmt(recomputed)}), "
                f"over its budget {epsilon_max:g}"
            )
        if math.isinf(recorded) or recorded > epsilon_max:
            over += 1
        mismatched = any(not r.matches for r in recomputations if r.client_id == client_id)
        verdict = "fail" if problems or mismatched else "pass"
        findings += problems
        rows.append(
            [
                client_id,
                _fmt(recorded),
                _fmt(recomputed),
                _fmt(final.relative_difference) if final else "-",
                str(len(entries)),
                f"{epsilon_max:g}",
                verdict,
            ]
        )
    return rows, findings, over


def _plot(points: list[Recomputation], epsilon_max: float, out: Path) -> None:
    """Recorded vs recomputed cumulative record-level epsilon per round (finite record-level ``points``)."""
    from crosslm_secure.report.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key in sorted({(r.client_id, r.accountant) for r in points}):
        series = sorted((r for r in points if (r.client_id, r.accountant) == key), key=lambda r: r.line)
        rounds = [r.round for r in series]
        line = ax.plot(rounds, [r.recorded for r in series], marker="o", label=f"{key[0]} {key[1]} (recorded)")
        ax.plot(
            rounds,
            [r.recomputed for r in series],
            linestyle="--",
            marker="x",
            color=line[0].get_color(),
            label=f"{key[0]} dp-accounting {'RDP' if key[1] == 'rdp' else 'PLD'}",
        )
    ax.axhline(epsilon_max, color="black", linestyle=":", linewidth=1, label=f"budget {epsilon_max:g}")
    ax.set_xticks(sorted({r.round for r in points}))
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative epsilon (record level)")
    ax.set_title("Recorded vs independently recomputed epsilon")
    ax.legend(fontsize=6, ncol=2)
    save_figure(fig, out)


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.4g}"


def _json_number(value: float) -> float | str:
    return "inf" if math.isinf(value) else value
