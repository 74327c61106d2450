"""Each strategy the config accepts is registered, and each registered one is accepted."""

from __future__ import annotations

import typing

import pytest

from crosslm_secure.aggregation.schemes import SCHEMES, scheme_for
from crosslm_secure.config import FeedbackConfig, Method
from crosslm_secure.errors import ConfigError
from crosslm_secure.methods import METHODS, method_for


def test_every_configurable_method_is_registered_and_back() -> None:
    assert set(typing.get_args(Method)) == set(METHODS)
    for name in METHODS:
        assert method_for(name).name == name


def test_every_configurable_feedback_scheme_is_registered_and_back() -> None:
    accepted = set(typing.get_args(FeedbackConfig.model_fields["aggregator"].annotation))
    assert accepted == set(SCHEMES)
    for name in SCHEMES:
        assert scheme_for(name).name == name


def test_what_each_method_does_in_a_round() -> None:
    crosslm, standalone, kd, zero = (method_for(n) for n in ("crosslm", "standalone", "data_free_kd", "llm_zero_shot"))
    assert (crosslm.generates, crosslm.gets_feedback, crosslm.tunes_llm, crosslm.enhances) == (True, True, True, True)
    assert (kd.generates, kd.gets_feedback, kd.tunes_llm, kd.enhances) == (True, False, False, True)
    assert not (standalone.generates or standalone.gets_feedback or standalone.tunes_llm or standalone.enhances)
    assert zero.last_round(5) == 0 and crosslm.last_round(5) == 5


def test_what_each_ablation_and_the_calibrated_baseline_change() -> None:
    crosslm, none, chance, calibrated = (
        method_for(n) for n in ("crosslm", "crosslm_no_feedback", "crosslm_random_feedback", "llm_zero_shot_calibrated")
    )
    flags = ("generates", "gets_feedback", "tunes_llm", "enhances", "weighs_by_feedback")
    assert [getattr(none, f) for f in flags] == [True, False, True, True, False]
    assert [getattr(chance, f) for f in flags] == [True, True, True, True, False]
    assert [getattr(crosslm, f) for f in flags] == [True, True, True, True, True]
    assert calibrated.calibrates_llm and not crosslm.calibrates_llm and calibrated.last_round(5) == 0


def test_only_the_protected_scheme_needs_keys() -> None:
    assert scheme_for("ckks").protected and scheme_for("ckks").needs_key_ceremony
    assert not scheme_for("plaintext").protected and not scheme_for("plaintext").needs_key_ceremony


def test_unknown_names_are_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"run.method 'fedavg' is not one of \['crosslm'"):
        method_for("fedavg")
    with pytest.raises(ConfigError, match=r"feedback.aggregator 'paillier' is not one of \['ckks', 'plaintext'\]"):
        scheme_for("paillier")
