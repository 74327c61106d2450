"""Privacy budget of a run, per client, as data (the table and plot are in :mod:`crosslm_secure.report.budget`).

Reads the verified ledgers at ``runs/<id>/clients/<client_id>/ledger.jsonl``; a tampered
or truncated ledger stops the report with its error instead of showing wrong numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crosslm_secure.errors import RunError
from crosslm_secure.privacy.budget import epsilon_left
from crosslm_secure.privacy.ledger import LEDGER_FILE, LedgerEntry
from crosslm_secure.report.run_ledgers import enrolled_identities, run_client_ids, verified_ledger
from crosslm_secure.runstore import RunStore

SCORE_RELEASE_MEANING = (
    "The score-release epsilon is the privacy of each round's noised score vector with a whole client's data "
    "as the unit (client level). Its noise only floods the CKKS decryption noise; it is not sized for a "
    "client-level guarantee, so the number is large and promises next to nothing at client level. The "
    "record-level epsilon (DP-SGD) is the run's privacy guarantee; the scores are computed from the DP-trained "
    "model and cost it nothing more."
)
"""What the score-release epsilon means, in the one wording every report and table uses."""

NON_PRIVATE_LABEL = "epsilon = inf (non-private)"


@dataclass(frozen=True)
class ClientBudget:
    """One client's privacy spend; ``epsilon_spent`` is inf after non-private training."""

    client_id: str
    epsilon_spent: float
    epsilon_max: float
    epsilon_left: float
    rounds: int
    accountant: str
    delta: float | None
    private: bool
    epsilon_by_round: list[tuple[int, float]]
    """Cumulative record-level epsilon after each round (the round's last entry)."""
    client_level_epsilon: float | None = None
    """Cumulative epsilon of the noised score releases (client-level unit); None if none."""


def client_ledgers(run_dir: str | Path) -> dict[str, Path]:
    """Client id -> ledger file of a run, sorted by client id.

    Raises:
        RunError: the run folder is missing or holds no ledgers.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} not found; pass --run runs/<id>")
    ledgers = {path.parent.name: path for path in sorted((run_dir / "clients").glob(f"*/{LEDGER_FILE}"))}
    if not ledgers:
        raise RunError(f"run {run_dir} has no client ledgers under clients/*/{LEDGER_FILE}")
    return ledgers


def client_budget(client_id: str, entries: list[LedgerEntry]) -> ClientBudget:
    """Summarize one client's verified ledger entries (budget = record-level DP-SGD)."""
    releases = [e for e in entries if e.unit == "client"]
    client_level = releases[-1].epsilon["rdp"] if releases else None  # RDP evaluates any noise level
    entries = [e for e in entries if e.unit == "record"]
    if not entries:
        return ClientBudget(client_id, 0.0, math.nan, math.nan, 0, "-", None, True, [], client_level)
    last = entries[-1]
    by_round: dict[int, float] = {}
    for entry in entries:
        by_round[entry.round] = entry.spent()
    spent = last.spent()
    deltas = [e.delta for e in entries if e.delta is not None]
    return ClientBudget(
        client_id=client_id,
        epsilon_spent=spent,
        epsilon_max=last.epsilon_max,
        epsilon_left=epsilon_left(spent, last.epsilon_max),
        rounds=len(by_round),
        accountant=last.accountant,
        delta=deltas[-1] if deltas else None,
        private=not any(e.mechanism == "non-private" for e in entries),
        epsilon_by_round=sorted(by_round.items()),
        client_level_epsilon=client_level,
    )


def run_budgets(run_dir: str | Path) -> list[ClientBudget]:
    """Every configured client's budget in a run (ledgers verified on load, signatures included).

    Raises:
        RunError: no run folder or no ledgers.
        LedgerError: a configured client's ledger is missing, empty, headless, truncated,
            tampered, of another run, or not signed by the client's enrolled key.
    """
    client_ledgers(run_dir)
    store = RunStore.open(Path(run_dir))
    identities = enrolled_identities(store)
    return [
        client_budget(client_id, verified_ledger(store, client_id, identities))
        for client_id in run_client_ids(Path(run_dir))
    ]


def budgets_json(budgets: list[ClientBudget]) -> list[dict[str, Any]]:
    """Plain JSON-safe rows (inf as the string "inf", NaN as null)."""
    return [_json_safe(asdict(b)) for b in budgets]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return "inf" if math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
