"""Budget policy: a client declines a round that would exceed epsilon_max."""

from __future__ import annotations

import pytest

from crosslm_secure.privacy.accounting import MechanismBlock
from crosslm_secure.privacy.budget import check_round, decline_reason
from crosslm_secure.privacy.ledger import Ledger, ledger_path

DELTA = 1e-5
ROUND = MechanismBlock(1.0, 0.05, 40)


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(ledger_path(tmp_path, "client-1"), client_id="client-1")


def record(ledger: Ledger, round_index: int, block: MechanismBlock = ROUND) -> None:
    ledger.record_dp_sgd(
        run_id="run",
        round_index=round_index,
        sample_rate=block.sample_rate,
        noise_multiplier=block.noise_multiplier,
        steps=block.steps,
        max_grad_norm=1.0,
        delta=DELTA,
        accountant="rdp",
        epsilon_max=3.0,
    )


def test_check_round_projects_history_plus_plan(ledger):
    record(ledger, 0)
    check = check_round(ledger, [ROUND], epsilon_max=3.0, accountant="rdp", delta=DELTA)
    assert 0 < check.spent < check.projected
    assert check.projected == pytest.approx(ledger.epsilon("rdp", extra=[ROUND]))
    assert check.left == pytest.approx(3.0 - check.spent)


def test_declines_only_when_the_round_would_exceed_the_budget(ledger):
    rounds_taken = 0
    while (
        reason := decline_reason(
            ledger,
            [ROUND],
            client_id="client-1",
            round_index=rounds_taken,
            epsilon_max=3.0,
            accountant="rdp",
            delta=DELTA,
        )
    ) is None:
        record(ledger, rounds_taken)
        rounds_taken += 1
    assert rounds_taken >= 1
    assert ledger.epsilon("rdp") <= 3.0
    assert ledger.epsilon("rdp", extra=[ROUND]) > 3.0
    assert reason.startswith(f"client-1 declines round {rounds_taken}: it would raise its epsilon")
    assert "epsilon_max=3" in reason
