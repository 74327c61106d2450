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
   tolerance (RDP vs RDP is tight; PRV vs PLD differ by discretisation, a few percent);
3. no client's record-level epsilon exceeds ``privacy.epsilon_max`` (recorded and recomputed),
   and every entry records the budget the run was configured with.

Record-level (DP-SGD) and client-level (score releases) entries are composed separately,
as the ledger does (SECURITY.md); the budget governs the record level.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
from dp_accounting import pld, rdp

from crosslm_secure.audit.base import AuditError, CheckResult, Table, audit_dir, save_result
from crosslm_secure.audit.ledger_crosschecks import (
    claim_findings,
    config_findings,
    load_verified_ledgers,
    round_findings,
)
from crosslm_secure.audit.progress import progress_bar
from crosslm_secure.audit.runinfo import run_config
from crosslm_secure.audit.trust import TrustAnchor, identity_findings
from crosslm_secure.config import AuditConfig
from crosslm_secure.privacy.accounting import MechanismBlock, merge_history
from crosslm_secure.privacy.ledger import LEDGER_FILE, LedgerEntry, LedgerError, ledger_path
from crosslm_secure.privacy.ledger_format import Mechanism
from crosslm_secure.runstore import RunStore

RDP_TOLERANCE = 0.01
"""Largest relative difference accepted between Opacus RDP and dp-accounting RDP (orders differ slightly)."""
PLD_TOLERANCE = 0.05
"""Largest relative difference accepted between Opacus PRV and dp-accounting PLD (both discretise)."""
ABSOLUTE_SLACK = 0.02
"""Differences below this many epsilon units always pass (PRV's own eps_error is 0.01)."""
PLD_DISCRETISATION = 1e-3
"""PLD grid step; 1e-3 gives the same epsilon as 1e-4 to 4 decimals here, 10x faster."""


@dataclass(frozen=True)
class Recomputation:
    """One entry's recorded cumulative epsilon next to an independent recomputation."""

    client_id: str
    line: int
    round: int
    mechanism: str
    unit: str
    accountant: str
    recorded: float
    recomputed: float
    tolerance: float

    @property
    def relative_difference(self) -> float:
        if math.isinf(self.recorded) and math.isinf(self.recomputed):
            return 0.0
        if math.isinf(self.recorded) or math.isinf(self.recomputed):
            return math.inf
        return abs(self.recorded - self.recomputed) / max(abs(self.recomputed), 1e-12)

    @property
    def matches(self) -> bool:
        if math.isinf(self.recorded) or math.isinf(self.recomputed):
            return self.relative_difference == 0.0
        return abs(self.recorded - self.recomputed) <= ABSOLUTE_SLACK or self.relative_difference <= self.tolerance


def independent_epsilon(history: Sequence[MechanismBlock], delta: float, accountant: str) -> float:
    """Epsilon of ``history`` at ``delta`` with dp-accounting: ``rdp`` -> RDP, ``prv`` -> PLD."""
    blocks = merge_history(history)
    if not blocks:
        return 0.0
    event = dp_accounting.ComposedDpEvent([_event(b) for b in blocks])
    with _quiet():
        if accountant == "rdp":
            rdp_accountant = rdp.RdpAccountant()
            rdp_accountant.compose(event)
            return float(rdp_accountant.get_epsilon(delta))
        pld_accountant = pld.PLDAccountant(value_discretization_interval=PLD_DISCRETISATION)
        pld_accountant.compose(event)
        return float(pld_accountant.get_epsilon(delta))


def _event(block: MechanismBlock) -> dp_accounting.DpEvent:
    gaussian = dp_accounting.GaussianDpEvent(block.noise_multiplier)
    single = gaussian if block.sample_rate >= 1 else dp_accounting.PoissonSampledDpEvent(block.sample_rate, gaussian)
    return dp_accounting.SelfComposedDpEvent(single, block.steps)


@contextmanager
def _quiet() -> Any:
    # dp-accounting logs a warning per RDP order whose series does not converge (it drops
    # that order, which only loosens nothing: the minimum is over the remaining orders).
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


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
    del settings
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    ledgers = {p.parent.name: p for p in sorted((run_dir / "clients").glob(f"*/{LEDGER_FILE}"))}
    if not ledgers:
        raise AuditError(
            f"audit ledger: {run_dir} has no clients/*/{LEDGER_FILE}; audit a run in which clients trained"
        )
    epsilon_max = config.privacy.epsilon_max
    store = RunStore(run_dir)
    anchor = anchor or TrustAnchor()
    identities, findings = _trusted_identities(store, anchor)
    entries_by_client, ledger_findings = load_verified_ledgers(store, config, identities)
    findings += ledger_findings
    for client_id in sorted(set(ledgers) - set(config.client_ids())):
        findings.append(f"clients/{client_id}/{LEDGER_FILE}: a ledger of {client_id}, who is not a client of this run")
    ledgers = {c: ledger_path(run_dir, c) for c in sorted(set(ledgers) | set(config.client_ids()))}
    findings += config_findings(config, entries_by_client)
    findings += round_findings(run_dir, config, entries_by_client)
    findings += claim_findings(run_dir, entries_by_client, identities)
    # A ledger "verifies" when it loads and nothing above was found in it (signatures, run, rounds, claims).
    verified = [c for c in entries_by_client if not any(f"clients/{c}/{LEDGER_FILE}" in f for f in findings)]

    work = [(client_id, line, entry) for client_id, es in entries_by_client.items() for line, entry in enumerate(es, 1)]
    recomputations: list[Recomputation] = []
    for client_id, line, entry in progress_bar(work, "recomputing epsilon", enabled=progress):
        recomputations += _recompute_entry(client_id, line, entry, entries_by_client[client_id][: line - 1])
    for item in recomputations:
        if not item.matches:
            findings.append(
                f"clients/{item.client_id}/{LEDGER_FILE} line {item.line}: recorded {item.accountant} epsilon "
                f"{_fmt(item.recorded)} but dp-accounting gives {_fmt(item.recomputed)} "
                f"(rel. diff {_fmt(item.relative_difference)}, tolerance {item.tolerance:g})"
            )

    rows, budget_findings, over = _budget_rows(entries_by_client, recomputations, epsilon_max, ledgers, run_dir)
    findings += budget_findings
    for client_id in ledgers:
        if client_id not in entries_by_client:
            rows.append([client_id, "-", "-", "-", "-", f"{epsilon_max:g}", "fail (ledger does not verify)"])
    rows.sort(key=lambda r: r[0])
    figure = _plot(run_dir, recomputations, epsilon_max)
    verdict = "pass" if not findings else "fail"
    spent = [
        record[-1].spent()
        for record in ([e for e in es if e.unit == "record"] for es in entries_by_client.values())
        if record
    ]
    spent_max = max(spent, default=0.0)
    numbers: dict[str, Any] = {
        "clients": len(ledgers),
        "ledgers_verified": len(verified),
        "entries": sum(len(e) for e in entries_by_client.values()),
        "recomputations": len(recomputations),
        "recomputations_mismatched": sum(not r.matches for r in recomputations),
        "max_relative_difference": _json_number(max((r.relative_difference for r in recomputations), default=0.0)),
        "epsilon_max": epsilon_max,
        "epsilon_spent_max": _json_number(spent_max),
        "clients_over_budget": over,
    }
    summary = (
        f"{len(verified)} of {len(ledgers)} ledgers verify; {len(recomputations)} recorded epsilons "
        f"recomputed with dp-accounting, {numbers['recomputations_mismatched']} outside tolerance; "
        f"max record-level epsilon {_fmt(spent_max)} of budget {epsilon_max:g}, "
        f"{over} client(s) over budget."
    )
    result = CheckResult(
        name="ledger",
        title="Ledger audit: hash chains, independent epsilon, budgets",
        verdict=verdict,
        summary=summary,
        numbers=numbers,
        tables=[
            Table(
                "Per client (record-level epsilon, the budget's accountant)",
                ["client", "recorded eps", "recomputed eps", "rel. diff", "entries", "budget", "verdict"],
                rows,
            ),
            Table(
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
            ),
        ],
        figures=[figure] if figure else [],
        findings=findings,
        details={
            "tolerances": {"rdp_vs_rdp": RDP_TOLERANCE, "prv_vs_pld": PLD_TOLERANCE, "absolute": ABSOLUTE_SLACK},
            "independent_accountant": f"dp-accounting {getattr(dp_accounting, '__version__', '0.6.0')}",
            **anchor.details(),
        },
    )
    save_result(run_dir, result)
    return result


def _trusted_identities(store: RunStore, anchor: TrustAnchor) -> tuple[dict[str, list[Any]], list[str]]:
    """The keys ledger entries and claims are checked against, and why ``run.json`` disagrees with them."""
    try:
        identities = anchor.identities(store)
    except LedgerError as exc:
        return {}, [str(exc)]
    return identities, identity_findings(store, anchor)


def _recompute_entry(client_id: str, line: int, entry: LedgerEntry, earlier: list[LedgerEntry]) -> list[Recomputation]:
    """Recompute one entry's cumulative epsilon for each accountant it records a finite value for."""
    history = [e for e in [*earlier, entry] if e.unit == entry.unit]
    out = []
    for accountant, recorded in sorted(entry.epsilon.items()):
        if entry.unit == "client" and accountant == "prv":
            continue  # the ledger records PRV of score releases as the honest bound inf (ledger.py)
        if entry.unit == "record" and any(e.mechanism == Mechanism.NON_PRIVATE for e in history):
            recomputed = math.inf
        else:
            blocks = [b for b in (e.block() for e in history) if b is not None]
            delta = entry.delta if entry.delta is not None else next((e.delta for e in history if e.delta), None)
            if delta is None:
                continue
            try:
                recomputed = independent_epsilon(blocks, delta, accountant)
            except (ValueError, OverflowError, RuntimeError):
                recomputed = math.inf
        tolerance = RDP_TOLERANCE if accountant == "rdp" else PLD_TOLERANCE
        out.append(
            Recomputation(
                client_id, line, entry.round, entry.mechanism, entry.unit, accountant, recorded, recomputed, tolerance
            )
        )
    return out


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


def _plot(run_dir: Path, recomputations: list[Recomputation], epsilon_max: float) -> str | None:
    """Recorded vs recomputed cumulative record-level epsilon per round (PNG in audit/)."""
    points = [r for r in recomputations if r.unit == "record" and math.isfinite(r.recorded)]
    if not points:
        return None
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
    save_figure(fig, audit_dir(run_dir) / "ledger_epsilon.png")
    return "ledger_epsilon.png"


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.4g}"


def _json_number(value: float) -> float | str:
    return "inf" if math.isinf(value) else value
