"""Privacy budget of a run, per client: a table, JSON, and an epsilon-per-round plot.

Reads the verified ledgers at ``runs/<id>/clients/<client_id>/ledger.jsonl``; a tampered
or truncated ledger stops the report with its error instead of showing wrong numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from crosslm_secure.errors import RunError
from crosslm_secure.privacy.budget import epsilon_left
from crosslm_secure.privacy.ledger import LEDGER_FILE, LedgerEntry
from crosslm_secure.privacy.run_ledgers import enrolled_identities, run_client_ids, verified_ledger
from crosslm_secure.runstore import RunStore

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


def budget_table(budgets: list[ClientBudget], *, title: str = "Privacy budget") -> Table:
    """A rich table: client, epsilon spent, left, budget, rounds, accountant, delta."""
    table = Table(title=title)
    if any(not b.private for b in budgets):
        table.caption = "epsilon = inf: trained on private data without DP"
    columns = (
        "client",
        "epsilon spent",
        "epsilon left",
        "epsilon max",
        "rounds",
        "accountant",
        "delta",
        "release eps (client level)",
    )
    for column in columns:
        table.add_column(
            column,
            justify="left" if column in ("client", "accountant") else "right",
            no_wrap=column in ("client", "epsilon spent"),
        )
    for b in budgets:
        spent = "inf (no DP)" if not b.private else f"{b.epsilon_spent:.3f}"
        table.add_row(
            b.client_id,
            spent,
            "-" if not b.private else f"{b.epsilon_left:.3f}",
            f"{b.epsilon_max:g}",
            str(b.rounds),
            b.accountant,
            "-" if b.delta is None else f"{b.delta:.1e}",
            "-" if b.client_level_epsilon is None else f"{b.client_level_epsilon:.3g}",
        )
    return table


def budgets_json(budgets: list[ClientBudget]) -> list[dict[str, Any]]:
    """Plain JSON-safe rows (inf as the string "inf", NaN as null)."""
    return [_json_safe(asdict(b)) for b in budgets]


def plot_epsilon(budgets: list[ClientBudget], out_path: str | Path, *, title: str = "") -> Path:
    """Draw cumulative epsilon per round for each client, with each budget as a dashed line.

    Non-private clients are listed in the legend as epsilon = inf (no line).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crosslm_secure.report.plots import save_figure

    figure, axes = plt.subplots(figsize=(6, 4))
    budgets_drawn: set[float] = set()
    for b in budgets:
        if not b.private:
            axes.plot([], [], linestyle="none", label=f"{b.client_id}: {NON_PRIVATE_LABEL}")
            continue
        rounds = [r for r, _ in b.epsilon_by_round]
        values = [e for _, e in b.epsilon_by_round]
        axes.plot(rounds, values, marker="o", label=b.client_id)
        if math.isfinite(b.epsilon_max) and b.epsilon_max not in budgets_drawn:
            budgets_drawn.add(b.epsilon_max)
            axes.axhline(b.epsilon_max, linestyle="--", color="grey", linewidth=1)
            axes.annotate(
                f"epsilon_max={b.epsilon_max:g}",
                (0, b.epsilon_max),
                fontsize=8,
                xytext=(2, 2),
                textcoords="offset points",
                xycoords=("axes fraction", "data"),
            )
    axes.set_xlabel("round")
    axes.set_ylabel(f"cumulative epsilon ({budgets[0].accountant if budgets else ''})")
    axes.set_title(title or "Privacy spent per client")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, Path(out_path))


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
