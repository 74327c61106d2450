"""Every ledger entry's recorded cumulative epsilon, recomputed with an independent accountant.

Google's ``dp-accounting`` recomputes the recorded mechanisms: RDP for the recorded ``rdp``
value, PLD for the recorded ``prv`` value, within a stated tolerance (RDP vs RDP is tight; PRV
vs PLD differ by discretisation, a few percent). Record-level (DP-SGD) and client-level (score
release) entries are composed separately, as the ledger does.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dp_accounting
import numpy as np
from dp_accounting import pld, rdp

from crosslm_secure.privacy.accounting import MechanismBlock, merge_history
from crosslm_secure.privacy.ledger import LedgerEntry
from crosslm_secure.privacy.ledger_format import Mechanism

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


def recompute_entry(client_id: str, line: int, entry: LedgerEntry, earlier: list[LedgerEntry]) -> list[Recomputation]:
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
