"""White-box one-run DP audit: Dirac canaries through the real DPTrainer; planted accounting errors fail it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from typer.testing import CliRunner

from crosslm_secure.audit.canaries import epsilon_lower_bound, inclusion, p_value
from crosslm_secure.audit.dp_audit import run_dp_audit
from crosslm_secure.audit.whitebox import (
    DiracHead,
    _correct_guesses,
    canary_directions,
    ceiling_bound,
    mechanism_check,
    run_whitebox,
)
from crosslm_secure.cli import app
from crosslm_secure.client import dp_trainer, scheduled
from crosslm_secure.client.dp_trainer import DPTrainer
from crosslm_secure.config import SLMConfig
from crosslm_secure.privacy.accounting import MechanismBlock, epsilon, noise_multiplier_for
from crosslm_secure.privacy.ledger import Ledger
from crosslm_secure.privacy.settings import PrivacyConfig
from tests.unit.audit.golden import assert_matches_golden

DIM = CANARIES = 1024  # enough canaries that a 2x leak stands > 3.7 standard errors above the claim
RECORDS = 200
RATE = 0.25
STEPS = 40
SEED = 3


def _audit(tmp_path: Path, *, target_epsilon: float = 2.0):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(RECORDS, DIM, generator=generator)
    features /= features.norm(dim=1, keepdim=True)
    labels = (features[:, 0] > 0).long()
    count = RECORDS + int(inclusion(CANARIES, SEED).sum())
    trainer = DPTrainer(
        SLMConfig(trainable="head", private_sample_rate=RATE, private_steps=STEPS),
        PrivacyConfig(target_epsilon=target_epsilon, delta=1e-5, epsilon_max=1e9),
        ledger=Ledger(tmp_path / "ledger.jsonl", client_id="c"),
        run_id="audit",
        client_id="c",
        planned_rounds=1,
        num_records=count,
        device="cpu",
        seed=0,
        progress=False,
    )
    return run_whitebox(
        trainer,
        torch.nn.Linear(DIM, 2),
        0.05,
        features,
        labels,
        canaries=CANARIES,
        rounds=1,
        seed=SEED,
        guess_fraction=0.15,
        confidence=0.95,
    )


def test_honest_run_at_eps_2_passes_and_measures_the_claimed_mechanism(tmp_path: Path) -> None:
    result = _audit(tmp_path)
    numbers = result.numbers
    assert math.isclose(numbers["claimed_epsilon"], 2.0, rel_tol=0.02)
    assert not result.fail_bound and not result.fail_mechanism
    low, high = numbers["measured_shift_ci95"]
    assert low - 0.1 < numbers["claimed_shift"] < high + 0.1  # the audit sees the mechanism it was told of
    assert 0 < numbers["ceiling_epsilon"] < numbers["claimed_epsilon"]
    assert numbers["steps"] == STEPS


def test_halved_noise_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class HalfNoise(PrivacyEngine):
        def make_private(self, **kwargs):
            kwargs["noise_multiplier"] /= 2  # the bug: the ledger still records the full multiplier
            return super().make_private(**kwargs)

    monkeypatch.setattr(dp_trainer, "PrivacyEngine", HalfNoise)
    result = _audit(tmp_path)
    assert result.fail_mechanism
    assert result.numbers["shift_ratio"] > 1.5


def test_sample_rate_recorded_at_half_the_true_one_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class DoubleRate(UniformWithReplacementSampler):
        def __iter__(self):  # samples at twice the rate it reports (and the ledger records)
            for _ in range(self.steps):
                mask = torch.rand(self.num_samples, generator=self.generator) < 2 * self.sample_rate
                yield mask.nonzero(as_tuple=False).reshape(-1).tolist()

    def loader(dataset, *, sample_rate, generator):
        made = DPDataLoader(dataset, sample_rate=sample_rate, generator=generator)
        made.batch_sampler.__class__ = DoubleRate
        return made

    monkeypatch.setattr(scheduled, "DPDataLoader", loader)
    result = _audit(tmp_path)
    assert result.numbers["sample_rate"] == RATE  # the ledger's claim
    assert result.fail_mechanism
    assert result.numbers["shift_ratio"] > 1.5


def test_disabled_clipping_fails_both_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoClipping(PrivacyEngine):
        def make_private(self, **kwargs):
            huge = 1e6  # clip at a norm nothing reaches; the noise keeps the accounted std sigma * C
            kwargs["noise_multiplier"] *= kwargs["max_grad_norm"] / huge
            kwargs["max_grad_norm"] = huge
            return super().make_private(**kwargs)

    monkeypatch.setattr(dp_trainer, "PrivacyEngine", NoClipping)
    result = _audit(tmp_path)
    assert result.fail_mechanism
    assert result.fail_bound
    assert result.numbers["empirical_epsilon_lower_bound"] > result.numbers["claimed_epsilon"]


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_the_mechanism_check_with_one_canary_on_a_side_has_no_spread_to_measure_and_does_not_fail() -> None:
    standard = np.random.default_rng(0).normal(size=(40, 10))
    included = np.zeros(10, dtype=bool)
    included[3] = True  # one included canary: its group has no sample variance
    check = mechanism_check(standard, included, sigma=1.0, rate=0.25)
    assert math.isfinite(check["measured_shift"]) and all(math.isnan(x) for x in check["measured_shift_ci95"])
    assert check["mechanism_fail"] is False
    two = included.copy()
    two[7] = True  # two on each side: the spread is measured
    assert all(math.isfinite(x) for x in mechanism_check(standard, two, sigma=1.0, rate=0.25)["measured_shift_ci95"])


def test_a_canary_gradient_is_one_fixed_direction_whatever_the_weights() -> None:
    directions = canary_directions(4, 8, seed=0)
    torch.testing.assert_close(directions @ directions.T, torch.eye(4), atol=1e-5, rtol=0)
    for seed in (0, 1):
        torch.manual_seed(seed)
        head = DiracHead(torch.nn.Linear(8, 3), 0.0, directions)
        row = torch.cat([directions[2] * 5.0, torch.tensor([2.0])]).unsqueeze(0)
        loss = torch.nn.functional.cross_entropy(head(row), torch.zeros(1, dtype=torch.long))
        loss.backward()
        expected = (2 / 3) * torch.ones(3, 1) * (directions[2] * 5.0)
        torch.testing.assert_close(head.classifier.weight.grad, expected, atol=1e-5, rtol=0)


def test_real_record_gradients_are_orthogonal_to_every_canary_direction() -> None:
    directions = canary_directions(6, 8, seed=1)
    head = DiracHead(torch.nn.Linear(8, 3), 0.0, directions)
    rows = torch.cat([torch.randn(5, 8), -torch.ones(5, 1)], dim=1)
    torch.nn.functional.cross_entropy(head(rows), torch.tensor([0, 1, 2, 1, 0])).backward()
    along = head.classifier.weight.grad.sum(dim=0) @ directions.T
    torch.testing.assert_close(along, torch.zeros(6), atol=1e-6, rtol=0)


# Golden numbers for the one-run bound with delta > 0 (Steinke, Nasr, Jagielski 2023, Thm. 3.1).
# Obtained once, outside this code base: the paper's appendix routines (``p_value_DP_audit`` and
# ``get_eps_audit``, as published in public repositories, e.g.
# ubc-systopia/panoramia-privacy-measurement O1_Steinke_Code/o1_audit.py, with its delta term on)
# re-implemented in 50-digit mpmath arithmetic: binomial pmfs summed exactly, alpha as the
# running maximum of P[v-i <= W < v] / i, eps by 80 bisection steps. The paper's own float
# routine (scipy) agreed with every p-value to 5e-15 relative.
# (m, r, v, eps, delta) -> p-value
GOLDEN_P_VALUES = {
    (1000, 100, 90, 2.0, 1e-5): 0.344986836793804,
    (1000, 100, 90, 2.0, 1e-3): 0.585832271512813,  # the delta term is 41% of it
    (10000, 500, 400, 1.0, 1e-5): 0.00406780827966085,
    (1000, 100, 60, 0.0, 1e-5): 0.0295689028555135,
    (100000, 1000, 700, 0.5, 1e-5): 0.0186590664187388,  # 2 m delta = 2
}
# (m, r, v, delta, confidence) -> the largest eps rejected
GOLDEN_EPSILONS = {
    (1000, 100, 90, 1e-5, 0.95): 1.62614348069573,  # 1.63082319274097 with delta = 0
    (1000, 100, 90, 1e-3, 0.95): 0.388473523897154,
    (10000, 500, 400, 1e-5, 0.95): 1.19167048661709,
    (1000, 100, 75, 1e-5, 0.95): 0.699466813163407,
    (100000, 1000, 700, 1e-5, 0.95): 0.696110485063986,
    (1000, 100, 55, 1e-5, 0.95): 0.0,
}


@pytest.mark.parametrize("args", sorted(GOLDEN_P_VALUES))
def test_the_one_run_p_value_with_delta_matches_the_papers_algorithm(args: tuple) -> None:
    assert p_value(*args) == pytest.approx(GOLDEN_P_VALUES[args], rel=1e-9)


@pytest.mark.parametrize("args", sorted(GOLDEN_EPSILONS))
def test_the_one_run_epsilon_lower_bound_with_delta_matches_the_papers_algorithm(args: tuple) -> None:
    assert epsilon_lower_bound(*args) == pytest.approx(GOLDEN_EPSILONS[args], abs=1e-9)


def test_ceiling_is_the_bound_at_the_expected_number_of_correct_guesses() -> None:
    # 100 guesses at eps 2 (1) expect 88.08 (73.11) right, rounded down to 88 (73); at eps = inf
    # all 100 are right. Golden values computed as above, at v = 88, 73 and 100.
    assert ceiling_bound(1000, 100, 2.0, 1e-5, 0.95) == pytest.approx(1.46436034664545, abs=1e-9)
    assert ceiling_bound(1000, 100, 1.0, 1e-5, 0.95) == pytest.approx(0.604909727443328, abs=1e-9)
    assert ceiling_bound(1000, 100, math.inf, 1e-5, 0.95) == pytest.approx(3.46537634781105, abs=1e-9)


def test_an_honest_mechanism_s_bound_exceeds_its_claim_in_at_most_1_minus_the_confidence() -> None:
    # The bound's guarantee, on a tiny head (epsilon 1 at rate 1 over 100 steps, 180 canaries, 27
    # guesses, as tests.unit.parties.pilot_job.AUDITABLE): the honest Gaussian mechanism's summed
    # standardised canary scores are N(q sqrt(T) / sigma, 1) if included, N(0, 1) if not. The rates
    # asserted are the ones docs/reviewers.md and SECURITY.md quote (0.2% at 95%, under 0.03% at 99%).
    sigma = noise_multiplier_for(target_epsilon=1.0, delta=1e-5, sample_rate=1.0, steps=100)
    claimed = epsilon([MechanismBlock(sigma, 1.0, 100)], 1e-5, "prv")
    included = inclusion(180, 0)
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((20_000, 180)) + included * math.sqrt(100) / sigma
    correct = np.array([_correct_guesses(row, included, 27) for row in scores])  # the audit's own guessing
    for confidence, most in ((0.95, 0.003), (0.99, 0.0003)):
        fails = next(v for v in range(28) if epsilon_lower_bound(180, 27, v, 1e-5, confidence) > claimed)
        assert np.mean(correct >= fails) <= most


def test_the_dp_audit_of_a_head_only_run_is_white_box_and_passes(dp_run: Path) -> None:
    result = run_dp_audit(dp_run, progress=False)
    numbers = result.numbers
    assert result.verdict == "pass", result.summary
    assert numbers["mode"] == "white-box" and numbers["canary_space"] == "gradient"
    assert numbers["claimed_epsilon"] == pytest.approx(1.0, abs=0.05)
    # The ceiling is the bound at the *expected* count of correct guesses: a lucky run may pass it.
    assert 0 <= numbers["empirical_epsilon_lower_bound"] <= numbers["claimed_epsilon"]
    assert 0 <= numbers["ceiling_epsilon"] <= numbers["claimed_epsilon"]
    assert json.loads((dp_run / "audit" / "dp.json").read_text())["numbers"]["mode"] == "white-box"
    assert "ceiling" in result.tables[0].columns
    assert_matches_golden(dp_run, "dp", "dp_white_box_dp_run")


def test_the_cli_takes_the_mode(dp_run: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["audit", "dp", "--run", str(dp_run), "--mode", "black-box", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert json.loads((dp_run / "audit" / "dp.json").read_text())["numbers"]["mode"] == "black-box"
