"""The one-run DP audit passes honest DP-SGD and catches DP-SGD whose noise was switched off."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from opacus import PrivacyEngine

import crosslm_secure.client.dp_trainer as dp_trainer
from crosslm_secure.audit.canaries import epsilon_lower_bound, p_value
from crosslm_secure.audit.dp_audit import run_dp_audit
from crosslm_secure.audit.runinfo import audit_settings
from tests.unit.audit.golden import assert_matches_golden


class NoiselessPrivacyEngine(PrivacyEngine):
    """A planted bug: the optimizer adds no noise, while the ledger still accounts the configured noise."""

    def make_private(self, **kwargs):  # type: ignore[no-untyped-def]
        made = super().make_private(**kwargs)
        made[1].noise_multiplier = 0.0
        return made


def test_an_honest_dp_run_at_epsilon_1_passes(dp_run: Path) -> None:
    settings = audit_settings(dp_run).model_copy(update={"dp_mode": "black-box"})
    result = run_dp_audit(dp_run, settings, progress=False)
    assert result.verdict == "pass", result.summary
    numbers = result.numbers
    assert numbers["claimed_epsilon"] == pytest.approx(1.0, abs=0.05)
    assert numbers["ledger_epsilon"] == pytest.approx(1.0, abs=0.05)
    assert 0 <= numbers["empirical_epsilon_lower_bound"] <= numbers["claimed_epsilon"]
    assert numbers["canaries"] == 180 and numbers["guesses"] == 72 and numbers["canary_space"] == "feature"
    assert numbers["mode"] == "black-box" and "black-box" in result.title
    assert (dp_run / "audit" / "dp.json").is_file() and (dp_run / "audit" / "dp_canary_scores.png").is_file()
    assert_matches_golden(dp_run, "dp", "dp_black_box_dp_run")


def test_dp_sgd_without_noise_is_caught(dp_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dp_trainer, "PrivacyEngine", NoiselessPrivacyEngine)
    result = run_dp_audit(dp_run, progress=False)
    assert result.numbers["claimed_epsilon"] == pytest.approx(1.0, abs=0.05)
    assert result.verdict == "fail", result.summary
    assert result.numbers["empirical_epsilon_lower_bound"] > result.numbers["claimed_epsilon"]
    assert "exceeds the claimed epsilon" in result.findings[0]


def test_a_non_private_run_passes_with_its_bound_reported(leaky_run: Path) -> None:
    """Full fine-tuning (text canaries) without DP: eps = inf cannot be contradicted; the bound is shown."""
    settings = audit_settings(leaky_run).model_copy(update={"canaries": 40})
    result = run_dp_audit(leaky_run, settings, progress=False)
    assert result.verdict == "pass"
    assert result.numbers["canary_space"] == "text"
    assert math.isinf(result.numbers["claimed_epsilon"]) and math.isinf(result.numbers["ledger_epsilon"])
    assert result.numbers["empirical_epsilon_lower_bound"] >= 0


def test_the_one_run_bound_matches_its_theorem() -> None:
    # All of 100 guesses right: (e^eps / (1 + e^eps))^100 = 0.05 at eps = ln(p / (1 - p)), p = 0.05^(1/100).
    p = 0.05 ** (1 / 100)
    assert epsilon_lower_bound(1000, 100, 100, 0.0, 0.95) == pytest.approx(math.log(p / (1 - p)), rel=1e-6)
    assert epsilon_lower_bound(1000, 100, 50, 1e-5, 0.95) == 0.0  # chance accuracy proves nothing
    assert p_value(1000, 100, 90, 2.0, 1e-5) > p_value(1000, 100, 90, 2.0, 0.0)  # delta loosens the bound
    assert epsilon_lower_bound(1000, 100, 90, 1e-3, 0.95) < epsilon_lower_bound(1000, 100, 90, 0.0, 0.95)
