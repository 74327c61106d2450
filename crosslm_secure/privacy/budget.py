"""Budget policy: a client declines work that would push it over ``epsilon_max``.

Pure decisions over a ledger and the releases a round plans; the trainer and the
coordinator call these, nothing here trains or writes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from crosslm_secure.privacy.accounting import MechanismBlock
from crosslm_secure.privacy.ledger import Ledger


@dataclass(frozen=True)
class BudgetCheck:
    """Epsilon before and after a planned round, against the budget."""

    spent: float
    projected: float
    epsilon_max: float
    accountant: str
    delta: float

    @property
    def exceeded(self) -> bool:
        return self.projected > self.epsilon_max

    @property
    def left(self) -> float:
        return epsilon_left(self.spent, self.epsilon_max)


def check_round(
    ledger: Ledger,
    planned: Sequence[MechanismBlock],
    *,
    epsilon_max: float,
    accountant: str,
    delta: float,
) -> BudgetCheck:
    """Epsilon of the ledger's history, and of that history plus ``planned``."""
    spent = ledger.epsilon(accountant, delta)
    projected = ledger.epsilon(accountant, delta, extra=planned) if planned else spent
    return BudgetCheck(spent, projected, epsilon_max, accountant, delta)


def decline_reason(
    ledger: Ledger,
    planned: Sequence[MechanismBlock],
    *,
    client_id: str,
    round_index: int,
    epsilon_max: float,
    accountant: str,
    delta: float,
) -> str | None:
    """The sentence a client declines round ``round_index`` with, or None to take part."""
    if ledger.non_private:
        return (
            f"{client_id} declines round {round_index}: its ledger records training without DP "
            "(epsilon = inf), so it has no DP budget left"
        )
    check = check_round(ledger, planned, epsilon_max=epsilon_max, accountant=accountant, delta=delta)
    if not check.exceeded:
        return None
    return (
        f"{client_id} declines round {round_index}: it would raise its epsilon from "
        f"{check.spent:.3f} to {check.projected:.3f} ({accountant}, delta={delta:.1e}), "
        f"over its budget epsilon_max={epsilon_max:g}"
    )


def epsilon_left(spent: float, epsilon_max: float) -> float:
    """Budget remaining; 0 when spent (or infinite, for non-private training) reaches the cap."""
    if math.isinf(spent):
        return 0.0
    return max(0.0, epsilon_max - spent)
