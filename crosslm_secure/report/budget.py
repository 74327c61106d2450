"""How a run's privacy spend is shown: a rich table and an epsilon-per-round plot.

The numbers come from :func:`crosslm_secure.report.budgets.run_budgets` (verified ledgers).
"""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from crosslm_secure.report.budgets import NON_PRIVATE_LABEL, SCORE_RELEASE_MEANING, ClientBudget

RELEASE_NOTE = f"release eps: {SCORE_RELEASE_MEANING}"


def budget_table(budgets: list[ClientBudget], *, title: str = "Privacy budget") -> Table:
    """A rich table: client, epsilon spent, left, budget, rounds, accountant, delta."""
    table = Table(title=title)
    notes = []
    if any(not b.private for b in budgets):
        notes.append("epsilon = inf: trained on private data without DP.")
    if any(b.client_level_epsilon is not None for b in budgets):
        notes.append(RELEASE_NOTE)
    table.caption = " ".join(notes) or None
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


def plot_epsilon(budgets: list[ClientBudget], out_path: str | Path, *, title: str = "") -> Path:
    """Draw cumulative epsilon per round for each client, with each budget as a dashed line.

    Non-private clients are listed in the legend as epsilon = inf (no line).
    """
    # Imported here, so `crosslm budget show` never loads matplotlib; report.plots selects Agg first.
    from crosslm_secure.report.plots import plt, save_figure

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
    axes.set_ylim(bottom=0)  # spend is read against zero and the budget, never against its own wobble
    axes.set_title(title or "Privacy spent per client")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, Path(out_path))
