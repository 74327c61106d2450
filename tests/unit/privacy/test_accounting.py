"""Accounting: our epsilon matches Opacus's accountants and Google's dp-accounting."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp
from opacus.accountants import PRVAccountant, RDPAccountant

from crosslm_secure.errors import PrivacyError
from crosslm_secure.privacy.accounting import (
    MechanismBlock,
    epsilon,
    merge_history,
    noise_multiplier_for,
    steps_per_epoch,
)

DELTA = 1e-5
# Two rounds of DP-SGD (q = 16/600, 74 draws each), a score release between them.
SGD = MechanismBlock(noise_multiplier=1.1, sample_rate=16 / 600, steps=74)
SCORE = MechanismBlock(noise_multiplier=8.0, sample_rate=1.0, steps=1)
HISTORY = [SGD, SCORE, SGD]


def _opacus_stepped(accountant, history):
    for block in history:
        for _ in range(block.steps):
            accountant.step(noise_multiplier=block.noise_multiplier, sample_rate=block.sample_rate)
    return accountant


def _dp_event(history):
    events = []
    for block in history:
        gaussian = dp_accounting.GaussianDpEvent(block.noise_multiplier)
        event = (
            gaussian if block.sample_rate == 1.0 else dp_accounting.PoissonSampledDpEvent(block.sample_rate, gaussian)
        )
        events.append(dp_accounting.SelfComposedDpEvent(event, block.steps))
    return dp_accounting.ComposedDpEvent(events)


def test_rdp_equals_opacus_step_by_step():
    ours = epsilon(HISTORY, DELTA, "rdp")
    theirs = _opacus_stepped(RDPAccountant(), HISTORY).get_epsilon(DELTA)
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_prv_equals_opacus_for_dp_sgd_history():
    history = [SGD, SGD]
    ours = epsilon(history, DELTA, "prv")
    theirs = _opacus_stepped(PRVAccountant(), history).get_epsilon(DELTA)
    assert ours == pytest.approx(theirs, rel=1e-9)


# Opacus's own PRV code takes log(0) on part of its grid (a numpy warning, not an error); ours quiets it.
@pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")
def test_prv_matches_opacus_for_mixed_history_within_its_error():
    ours = epsilon(HISTORY, DELTA, "prv")
    theirs = _opacus_stepped(PRVAccountant(), HISTORY).get_epsilon(DELTA)
    assert abs(ours - theirs) <= 0.02  # PRV eps_error is 0.01 for each


def test_rdp_agrees_with_dp_accounting_within_2_percent():
    ours = epsilon(HISTORY, DELTA, "rdp")
    accountant = rdp.RdpAccountant()
    accountant.compose(_dp_event(HISTORY))
    independent = accountant.get_epsilon(DELTA)
    assert ours == pytest.approx(independent, rel=0.02)


def test_prv_agrees_with_dp_accounting_pld_within_3_percent():
    ours = epsilon(HISTORY, DELTA, "prv")
    accountant = pld.PLDAccountant()
    accountant.compose(_dp_event(HISTORY))
    assert ours == pytest.approx(accountant.get_epsilon(DELTA), rel=0.03)


def test_prv_is_tighter_than_rdp():
    assert epsilon(HISTORY, DELTA, "prv") < epsilon(HISTORY, DELTA, "rdp")


def test_empty_history_spends_nothing():
    assert epsilon([], DELTA, "prv") == 0.0
    assert epsilon([MechanismBlock(1.0, 0.1, 0)], DELTA, "rdp") == 0.0


def test_merge_history_sums_steps_of_equal_mechanisms():
    merged = merge_history(HISTORY)
    assert merged == [MechanismBlock(1.1, 16 / 600, 148), SCORE]


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_noise_multiplier_reaches_target(accountant):
    steps = 3 * steps_per_epoch(16 / 600)
    sigma = noise_multiplier_for(
        target_epsilon=4.0, delta=DELTA, sample_rate=16 / 600, steps=steps, accountant=accountant
    )
    spent = epsilon([MechanismBlock(sigma, 16 / 600, steps)], DELTA, accountant)
    assert spent <= 4.0
    assert spent >= 3.9


def test_unreachable_target_is_refused():
    with pytest.raises(PrivacyError, match="out of reach"):
        noise_multiplier_for(target_epsilon=1e-9, delta=DELTA, sample_rate=1.0, steps=10**6, accountant="rdp")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (dict(noise_multiplier=0.0, sample_rate=0.1, steps=1), "noise_multiplier"),
        (dict(noise_multiplier=math.inf, sample_rate=0.1, steps=1), "noise_multiplier"),
        (dict(noise_multiplier=1.0, sample_rate=1.5, steps=1), "sample_rate"),
        (dict(noise_multiplier=1.0, sample_rate=0.1, steps=-1), "steps"),
    ],
)
def test_invalid_blocks_are_refused(block, message):
    with pytest.raises(PrivacyError, match=message):
        MechanismBlock(**block)


def test_unknown_accountant_is_refused():
    with pytest.raises(PrivacyError, match="unknown accountant"):
        epsilon(HISTORY, DELTA, "gdp")


def test_only_the_accountants_known_warnings_are_silenced() -> None:
    import warnings

    from crosslm_secure.privacy.accounting import _known_warnings_quiet

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _known_warnings_quiet():
            warnings.warn("Optimal order is the largest alpha. Please consider expanding the range", stacklevel=1)
            np.log(np.zeros(1))  # PRV's masked log(0)
            warnings.warn("a new warning from an upgraded accountant", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a new warning from an upgraded accountant"]
