"""PrivacyConfig: defaults, delta rule, refused combinations."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from crosslm_secure.errors import PrivacyError
from crosslm_secure.privacy.settings import PrivacyConfig


def test_defaults():
    cfg = PrivacyConfig()
    assert (cfg.dp, cfg.target_epsilon, cfg.accountant, cfg.grad_sample_mode) == (True, 8.0, "prv", "ghost")
    assert cfg.uses_target_epsilon and cfg.lora_rank == 0
    assert all(f.description for f in PrivacyConfig.model_fields.values())


def test_default_delta_is_well_below_one_over_n():
    cfg = PrivacyConfig()
    assert cfg.delta_for(600) == 1e-5
    assert cfg.delta_for(200_000) == pytest.approx(1 / 2_000_000)


def test_delta_at_or_above_one_over_n_is_refused():
    with pytest.raises(PrivacyError, match=r"privacy.delta \(0.01\) must be below 1/n = 0.01"):
        PrivacyConfig(delta=0.01).delta_for(100)
    assert PrivacyConfig(delta=1e-4).delta_for(100) == 1e-4


def test_no_records_is_refused():
    with pytest.raises(PrivacyError, match="no private records"):
        PrivacyConfig().delta_for(0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"noise_multiplier": 1.0}, "either target_epsilon or noise_multiplier"),
        ({"target_epsilon": None}, "noise_multiplier is required"),
        ({"target_epsilon": 12.0}, "exceeds epsilon_max"),
        ({"accountant": "gdp"}, "accountant"),
        ({"grad_sample_mode": "ew"}, "grad_sample_mode"),
        ({"max_grad_norm": 0}, "max_grad_norm"),
        ({"sigma": 1.0}, "sigma"),
    ],
)
def test_bad_settings_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        PrivacyConfig(**fields)


def test_infinite_target_means_noise_multiplier():
    cfg = PrivacyConfig(target_epsilon=math.inf, noise_multiplier=1.2)
    assert not cfg.uses_target_epsilon


def test_non_private_needs_no_noise():
    assert PrivacyConfig(dp=False, target_epsilon=None).dp is False
