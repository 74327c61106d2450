"""The membership-inference audit flags a leaky run and passes a DP one, on whole tiny runs."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from crosslm_secure.audit.attacks import LossAttack, RmiaAttack
from crosslm_secure.audit.base import AuditError, load_result
from crosslm_secure.audit.mia import _verdict_rules, run_mia_audit
from crosslm_secure.audit.population import ClientMechanism, client_mechanism, open_run
from crosslm_secure.audit.roc import MIN_SIDE, attack_metrics, auc, dp_test_point, tpr_at_fpr
from crosslm_secure.client.schedule import private_schedule
from tests.unit.audit.golden import assert_matches_golden


def test_a_leaky_run_is_flagged_with_auc_well_above_chance(leaky_run: Path) -> None:
    result = run_mia_audit(leaky_run, progress=False)
    assert result.verdict == "fail"
    assert result.numbers["slm_loss_auc_mean"] > 0.8
    assert any("AUC rule" in f and "LOSS" in f for f in result.findings)
    assert 0.25 < result.numbers["llm_auc"] < 0.75  # the LLM never saw the records
    saved = load_result(leaky_run, "mia")
    assert saved is not None and saved.numbers["slm_auc_mean"] == pytest.approx(result.numbers["slm_auc_mean"])
    for figure in result.figures:
        assert (leaky_run / "audit" / figure).stat().st_size > 1000
    assert json.loads((leaky_run / "audit" / "mia.json").read_text())["verdict"] == "fail"


def test_a_dp_run_at_low_epsilon_passes(dp_run: Path) -> None:
    result = run_mia_audit(dp_run, progress=False)
    assert result.verdict == "pass", result.findings
    assert result.findings == []
    for key in ("slm_auc_mean", "slm_tpr_at_1pct_fpr_mean", "slm_tpr_at_0.1pct_fpr_mean", "llm_auc"):
        assert 0 <= result.numbers[key] <= 1
    assert result.numbers["slm_rmia_auc_mean"] < 0.7
    assert result.details["clients"]["client-1"]["features_path"] is True
    assert result.details["clients"]["client-1"]["ledger_epsilon"] == pytest.approx(1.0, abs=0.05)
    assert_matches_golden(dp_run, "mia", "mia_dp_run")


def test_population_is_disjoint_from_every_client_and_halves_do_not_overlap(dp_run: Path) -> None:
    run = open_run(dp_run, None)
    private = {ex.uid for c in run.split.clients for ex in c.train}
    non_members = {ex.uid for ex in run.non_members}
    pool = {ex.uid for ex in run.reference_pool}
    assert not (private & non_members) and not (private & pool) and not (non_members & pool)
    assert abs(len(non_members) - len(pool)) <= 1


def test_metrics_separate_a_perfect_attack_from_a_blind_one() -> None:
    rng = np.random.default_rng(0)
    members, others = rng.normal(3, 1, 500), rng.normal(0, 1, 500)
    assert auc(members, others) > 0.95
    assert auc(others, members) < 0.05
    same = rng.normal(0, 1, 500)
    assert abs(auc(same, others) - 0.5) < 0.06
    assert tpr_at_fpr(members + 100, others, 0.001) == 1.0
    metrics = attack_metrics(rng.permutation(others), others, resamples=50, confidence=0.95, seed=0)
    # The DP rule: with 120 non-members a chance attack cannot beat e^1 * FPR upper bound; a perfect one does.
    blind_tpr, blind_fpr = dp_test_point(rng.normal(0, 1, 120), rng.normal(0, 1, 120), 0.001, 0.95)
    assert blind_tpr <= math.e * blind_fpr
    sharp_tpr, sharp_fpr = dp_test_point(rng.normal(9, 1, 120), rng.normal(0, 1, 120), 0.001, 0.95)
    assert sharp_tpr > math.e * sharp_fpr + 1e-5
    assert metrics.auc.low < 0.5 < metrics.auc.high


def test_the_dp_rule_fires_when_tpr_beats_what_the_claimed_epsilon_allows() -> None:
    rng = np.random.default_rng(1)
    sharp = (rng.normal(9, 1, 120), rng.normal(0, 1, 120))
    metrics = attack_metrics(*sharp, resamples=20, confidence=0.95, seed=0)
    claimed = ClientMechanism(True, 1.0, 0.1, 1e-5, rounds=1, steps=10, ledger_epsilon=1.0)
    found = _verdict_rules("client-1 SLM LOSS", metrics, sharp, claimed, max_auc=1.0, confidence=0.95)
    assert len(found) == 2 and all(
        f.startswith("client-1 SLM LOSS: TPR lower bound") and "(DP rule)" in f for f in found
    )
    no_dp = replace(claimed, private=False, ledger_epsilon=math.inf)  # eps = inf allows any attack
    assert _verdict_rules("client-1 SLM LOSS", metrics, sharp, no_dp, max_auc=1.0, confidence=0.95) == []


def test_rmia_ranks_by_the_likelihood_ratio_against_reference_models() -> None:
    target = np.array([0.9, 0.9, 0.5])
    references = np.array([[0.9, 0.3, 0.5], [0.9, 0.3, 0.5]])  # record 0 is easy for everyone
    z_target, z_references = np.full(50, 0.4), np.full((2, 50), 0.4)
    rmia = RmiaAttack(a=0.3, gamma=1.0).scores(target, references, z_target, z_references)
    loss = LossAttack().scores(target, references, z_target, z_references)
    assert loss[0] == loss[1] and rmia[1] > rmia[0]  # only RMIA discounts the easy record
    assert math.isclose(rmia.max(), 1.0, abs_tol=1e-3)


def test_a_run_without_its_checkpoint_names_the_file(dp_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / dp_run.name
    shutil.copytree(dp_run, copy)
    shutil.rmtree(copy / "clients" / "client-1" / "slm")
    with pytest.raises(AuditError, match=r"clients/client-1/slm is missing"):
        run_mia_audit(copy, progress=False)
    with pytest.raises(AuditError, match="config.yaml not found"):
        run_mia_audit(tmp_path / "nothing", progress=False)


def test_a_non_private_run_is_retrained_with_the_schedule_its_ledger_recorded(leaky_run) -> None:
    run = open_run(leaky_run, None)
    mechanism = client_mechanism(run, "client-1")
    settings = run.config.slm_for("client-1")
    schedule = private_schedule(settings, len(run.client("client-1").train))
    recorded = [e for e in run.ledger("client-1").entries if e.mechanism == "non-private"]
    assert not mechanism.private and mechanism.sample_rate == schedule.sample_rate
    assert mechanism.steps == sum(e.steps for e in recorded) > 0


def test_the_auc_rule_does_not_decide_on_a_handful_of_non_members() -> None:
    members, few = np.linspace(5, 6, 40), np.linspace(0, 1, MIN_SIDE - 1)
    tiny = attack_metrics(members, few, resamples=50, confidence=0.95, seed=0)
    assert tiny.auc.low == 1.0 and not tiny.decidable  # a degenerate bootstrap "interval" of [1, 1]
    claimed = ClientMechanism(True, 1.0, 0.1, 1e-5, rounds=1, steps=10, ledger_epsilon=50.0)
    assert _verdict_rules("client-1 SLM LOSS", tiny, (members, few), claimed, max_auc=0.8, confidence=0.95) == []
    enough = np.linspace(0, 1, MIN_SIDE)
    decided = attack_metrics(members, enough, resamples=50, confidence=0.95, seed=0)
    found = _verdict_rules("client-1 SLM LOSS", decided, (members, enough), claimed, max_auc=0.8, confidence=0.95)
    assert decided.decidable
    assert found == ["client-1 SLM LOSS: AUC lower bound 1.000 > audit.mia_max_auc 0.8 (AUC rule)"]
