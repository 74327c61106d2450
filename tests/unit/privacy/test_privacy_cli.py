"""`crosslm budget show|plot` over a run folder's client ledgers."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from crosslm_secure.privacy.ledger import Ledger, ledger_path
from crosslm_secure.report.budget_cli import budget_app

runner = CliRunner()


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "runs" / "demo-0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("partition:\n  clients: 2\n")  # clients client-1 and client-2
    dp = Ledger(ledger_path(run, "client-1"), client_id="client-1")
    for r in (1, 2):
        dp.record_dp_sgd(
            run_id="demo-0",
            round_index=r,
            sample_rate=0.05,
            noise_multiplier=1.0,
            steps=40,
            max_grad_norm=1.0,
            delta=1e-5,
            accountant="rdp",
            epsilon_max=10.0,
        )
        dp.record_score_release(
            run_id="demo-0",
            round_index=r,
            noise_std=2.0,
            sensitivity=0.5,
            count=1,
            delta=1e-5,
            accountant="rdp",
            epsilon_max=10.0,
        )
    plain = Ledger(ledger_path(run, "client-2"), client_id="client-2")
    plain.record_non_private(run_id="demo-0", round_index=1, steps=10, accountant="rdp", epsilon_max=10.0)
    return run


def test_show_table(run_dir):
    result = runner.invoke(budget_app, ["show", "--run", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "client-1" in result.output and "client-2" in result.output
    assert "inf (no DP)" in result.output
    assert "epsilon = inf: trained on private data without DP" in result.output
    assert "rdp" in result.output and "1.0e-05" in result.output
    words = " ".join(result.output.split())  # the caption wraps at the terminal's width
    assert "release eps: The score-release epsilon is the privacy of each round's noised score vector" in words


def test_show_json(run_dir):
    result = runner.invoke(budget_app, ["show", "--run", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    clients = {c["client_id"]: c for c in json.loads(result.output)["clients"]}
    dp, plain = clients["client-1"], clients["client-2"]
    assert dp["rounds"] == 2 and dp["private"] is True and dp["accountant"] == "rdp"
    assert 0 < dp["epsilon_spent"] < 10 and dp["epsilon_left"] == pytest.approx(10 - dp["epsilon_spent"])
    assert [r for r, _ in dp["epsilon_by_round"]] == [1, 2]
    assert dp["epsilon_by_round"][-1][1] == dp["epsilon_spent"]
    assert plain["epsilon_spent"] == "inf" and plain["private"] is False and plain["epsilon_left"] == 0.0


def test_plot_writes_png(run_dir):
    result = runner.invoke(budget_app, ["plot", "--run", str(run_dir)])
    assert result.exit_code == 0, result.output
    png = run_dir / "plots" / "epsilon.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tampered_ledger_is_an_error_not_a_table(run_dir):
    path = ledger_path(run_dir, "client-1")
    path.write_text(path.read_text().replace('"steps":40', '"steps":4', 1))
    result = runner.invoke(budget_app, ["show", "--run", str(run_dir)])
    assert result.exit_code == 1
    assert "was modified" in result.output


def test_missing_run_is_a_sentence(tmp_path):
    result = runner.invoke(budget_app, ["show", "--run", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "run folder" in result.output and "not found" in result.output
